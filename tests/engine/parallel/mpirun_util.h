#pragma once
// Running commands under mpirun from a test: the launcher prefix (oversubscribed so that -np 3
// works on 2 cores, --allow-run-as-root as root, coreutils' timeout so that a broken run cannot
// hang the suite) and a shell runner that captures every rank's output and the exit status.
// Tests that need several ranks start their own executable as the child (/proc/self/exe with
// --test-case selecting the child case and an environment variable naming its mode).
#include <doctest/doctest.h>
#include <fmt/format.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

namespace ll::test {

// The child case named by `variable` ("" in the parent process).
inline std::string child_mode(const char* variable) {
  const char* mode = std::getenv(variable);
  return mode != nullptr ? mode : "";
}

inline double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// Rank `rank`'s contribution to element i of a summing collective: small multiples of 1/8, so
// sums over ranks are exact in fp32 and results can be compared exactly.
inline float rank_contribution(int rank, int64_t i) {
  return float((i * 7 + rank * 13) % 17 - 8) / 8.0f;
}

struct MpiRun {
  int exit_code = -1;
  std::string output;  // stdout and stderr of every rank and of mpirun
  double seconds = 0.0;
};

inline bool have_mpirun() { return std::system("command -v mpirun >/dev/null 2>&1") == 0; }

// Skips the whole test executable (exit 77, ctest's skip code here) without mpirun.
inline void require_mpirun() {
  if (have_mpirun()) return;
  std::printf("SKIP: mpirun not found; install openmpi-bin (scripts/setup.sh) to test MPI\n");
  std::fflush(stdout);
  std::exit(77);
}

// "timeout -k 5 T mpirun -np N --oversubscribe [--allow-run-as-root] " (N == 1 with
// plain_single: no mpirun at all, a plain run).
inline std::string mpirun_prefix(int ranks, int timeout_s = 60, bool plain_single = false) {
  std::string prefix = fmt::format("timeout -k 5 {} ", timeout_s);
  if (ranks == 1 && plain_single) return prefix;
  prefix += fmt::format("mpirun -np {} --oversubscribe", ranks);
  if (geteuid() == 0) prefix += " --allow-run-as-root";
  return prefix + " ";
}

// Runs `command` through the shell with stderr joined to stdout.
inline MpiRun run_shell(const std::string& command) {
  MESSAGE(command);
  const auto start = std::chrono::steady_clock::now();
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  REQUIRE(pipe != nullptr);
  MpiRun run;
  char buffer[4096];
  size_t n = 0;
  while ((n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) run.output.append(buffer, n);
  const int status = pclose(pipe);
  run.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  run.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return run;
}

// This executable's doctest case `test_case` as `ranks` MPI processes, with `env` ("A=1 B=2")
// set for every rank.
inline MpiRun run_self_under_mpirun(int ranks, const std::string& env, const std::string& test_case,
                                    int timeout_s = 60) {
  const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();
  return run_shell(fmt::format("{} {}'{}' --test-case='{}'", env, mpirun_prefix(ranks, timeout_s),
                               self, test_case));
}

}  // namespace ll::test
