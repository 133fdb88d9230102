// scripts/family_examples.sh end to end (about 10 s on 2 cores): it finishes, and it prints
// what the README's "Model families" section says: each command shown there (as "$ COMMAND"),
// and each output line shown there, numbers within 1e-3 (times and speeds aside, token counts
// exact). The LongLoRA adapter of each family lowers the perplexity of its random base, and
// Llama-3's merged export scores the same.
#include <doctest/doctest.h>
#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <regex>
#include <sstream>

#include "tests/model/model_fixtures.h"
#include "tests/scripts/readme_lines.h"

using ll::test::lines_match;
using ll::test::lines_of;
using ll::test::read_bytes;
using ll::test::readme_code_lines;
using ll::test::replace_all;
using ll::test::TempDir;
namespace fs = std::filesystem;

namespace {

const std::string kReadmeOut = "demo/families";  // where the README's commands write

}  // namespace

TEST_CASE("family_examples.sh prints what the README shows") {
  for (const char* tool : {"init_model", "tokenize", "train_longlora", "ppl_eval", "export_hf"}) {
    REQUIRE_MESSAGE(fs::exists(fs::path(LL_BINARY_DIR) / tool), tool, " is not built");
  }
  TempDir dir("family_examples");
  const fs::path out = dir.path / "families", log = dir.path / "log.txt";
  const std::string cmd = fmt::format(
      "OMP_NUM_THREADS=1 TOOLS_DIR='{}' '{}/scripts/family_examples.sh' '{}' >'{}' 2>&1",
      LL_BINARY_DIR, LL_SOURCE_DIR, out.string(), log.string());
  const int status = std::system(cmd.c_str());
  std::string printed = read_bytes(log);
  INFO("output:\n", printed);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  CHECK(printed.find("== done in ") != std::string::npos);

  // As the README's commands would have printed it: its directory, tools at the root.
  replace_all(printed, out.string(), kReadmeOut);
  replace_all(printed, "$ " + std::string(LL_BINARY_DIR) + "/", "$ ./");
  const std::vector<std::string> printed_lines = lines_of(printed);
  const std::string script = read_bytes(fs::path(LL_SOURCE_DIR) / "scripts" / "family_examples.sh");

  const std::vector<std::string> code = readme_code_lines("Model families");
  CHECK(code.size() > 40);
  for (const std::string& line : code) {
    if (line.empty()) continue;
    INFO("README line: ", line);
    if (line.rfind("./", 0) == 0) {  // a command: the script ran exactly it
      CHECK(std::find(printed_lines.begin(), printed_lines.end(), "$ " + line) !=
            printed_lines.end());
    } else if (line.rfind("bible ", 0) == 0) {  // the text, as the script makes it
      std::string in_script = line;
      replace_all(in_script, kReadmeOut + "/text/", "\"$text/");
      replace_all(in_script, ".txt", ".txt\"");
      CHECK(script.find(in_script) != std::string::npos);
    } else {  // an output line
      CHECK(std::any_of(printed_lines.begin(), printed_lines.end(),
                        [&](const std::string& p) { return lines_match(line, p); }));
    }
  }

  // Each family's adapter lowers its base's perplexity on the held-out Ruth; Llama-3's merged
  // export scores what base + adapter scored.
  std::vector<double> ppl;
  for (const std::string& line : printed_lines) {
    if (line.rfind("perplexity ", 0) == 0) ppl.push_back(std::stod(line.substr(11)));
  }
  REQUIRE(ppl.size() == 7);  // llama3: base, adapter, export; qwen2.5, mistral: base, adapter
  CHECK(std::abs(ppl[2] - ppl[1]) <= 1e-6 * ppl[1]);
  for (const size_t base : {size_t(0), size_t(3), size_t(5)}) {
    INFO("base ", ppl[base], ", adapter ", ppl[base + 1]);
    CHECK(ppl[base + 1] < 0.9 * ppl[base]);
  }
}
