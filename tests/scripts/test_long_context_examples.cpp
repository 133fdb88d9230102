// scripts/long_context_examples.sh (well under a second): it prints what the README's "Half a
// million tokens on one GPU" section says: each command shown there (as "$ COMMAND"), each
// output line (numbers within 1e-3), and the table of the longest contexts exactly.
#include <doctest/doctest.h>
#include <sys/wait.h>

#include <cstdlib>

#include <fmt/format.h>

#include "tests/scripts/readme_lines.h"

using namespace ll::test;
namespace fs = std::filesystem;

TEST_CASE("long_context_examples.sh prints what the README shows") {
  REQUIRE_MESSAGE(fs::exists(fs::path(LL_BINARY_DIR) / "train_longlora"),
                  "train_longlora is not built");
  TempDir dir("long_context_examples");
  const fs::path log = dir.path / "log.txt";
  const std::string cmd =
      fmt::format("TOOLS_DIR='{}' '{}/scripts/long_context_examples.sh' >'{}' 2>&1", LL_BINARY_DIR,
                  LL_SOURCE_DIR, log.string());
  const int status = std::system(cmd.c_str());
  std::string printed = read_bytes(log);
  INFO("output:\n", printed);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  replace_all(printed, "$ " + std::string(LL_BINARY_DIR) + "/", "$ ./");
  const std::vector<std::string> printed_lines = lines_of(printed);

  const std::vector<std::string> code = readme_code_lines("Half a million tokens on one GPU");
  CHECK(code.size() > 40);
  for (const std::string& line : code) {
    if (line.empty()) continue;
    INFO("README line: ", line);
    if (line.rfind("./", 0) == 0) {
      CHECK(std::find(printed_lines.begin(), printed_lines.end(), "$ " + line) !=
            printed_lines.end());
    } else {
      CHECK(std::any_of(printed_lines.begin(), printed_lines.end(),
                        [&](const std::string& p) { return lines_match(line, p); }));
    }
  }
  int rows = 0;
  for (const std::string& line : readme_section_lines("Half a million tokens on one GPU")) {
    if (line.rfind("| llama", 0) != 0) continue;
    INFO("README table row: ", line);
    CHECK(std::find(printed_lines.begin(), printed_lines.end(), line) != printed_lines.end());
    ++rows;
  }
  CHECK(rows == 2);
}
