#pragma once
// Runs one of the built tools (LL_BINARY_DIR/<tool>) with shell-quoted arguments, its stdout and
// stderr captured in files of a test's temp directory.
#include <sys/wait.h>

#include <cstdlib>
#include <string>

#include <fmt/format.h>

#include "tests/model/model_fixtures.h"

namespace ll::test {

struct RunResult {
  int exit_code = -1;
  std::string out, err;
};

inline RunResult run_tool(const TempDir& dir, const std::string& tool, const std::string& args) {
  const fs::path out = dir.path / "stdout.txt", err = dir.path / "stderr.txt";
  const std::string cmd =
      fmt::format("'{}/{}' {} >'{}' 2>'{}'", LL_BINARY_DIR, tool, args, out.string(), err.string());
  const int status = std::system(cmd.c_str());
  RunResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = read_bytes(out);
  r.err = read_bytes(err);
  return r;
}

}  // namespace ll::test
