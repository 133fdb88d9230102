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

using ll::test::read_bytes;
using ll::test::TempDir;
namespace fs = std::filesystem;

namespace {

const std::string kReadmeOut = "demo/families";  // where the README's commands write

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    while (!line.empty() && (line.back() == ' ' || line.back() == '\r')) line.pop_back();
    lines.push_back(line);
  }
  return lines;
}

void replace_all(std::string& s, const std::string& from, const std::string& to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size())) {
    s.replace(at, from.size(), to);
  }
}

// The indented (code) lines of the README's "## Model families" section, indentation removed.
std::vector<std::string> readme_code_lines() {
  const std::string readme = read_bytes(fs::path(LL_SOURCE_DIR) / "README.md");
  const size_t begin = readme.find("\n## Model families\n");
  REQUIRE_MESSAGE(begin != std::string::npos, "README.md has no \"## Model families\" section");
  const size_t end = readme.find("\n## ", begin + 1);
  std::vector<std::string> code;
  for (const std::string& line : lines_of(readme.substr(begin, end - begin))) {
    if (line.rfind("    ", 0) == 0) code.push_back(line.substr(4));
  }
  return code;
}

// A line as text between numbers, and the numbers; a number followed by a unit of time or
// speed is left out of the comparison.
struct Shape {
  std::vector<std::string> text;
  std::vector<std::string> numbers;
};

Shape shape_of(const std::string& line) {
  static const std::regex number(R"([0-9]+(\.[0-9]+)?)");
  static const std::regex timing(R"(^ ?(s\b|tokens/s|tok/s|MB/s))");
  Shape s;
  std::string rest = line;
  std::smatch m;
  while (std::regex_search(rest, m, number)) {
    s.text.push_back(m.prefix());
    const std::string after = m.suffix();
    s.numbers.push_back(std::regex_search(after, timing) ? std::string("<time>") : m.str());
    rest = after;
  }
  s.text.push_back(rest);
  return s;
}

bool numbers_match(const std::string& a, const std::string& b) {
  if (a == "<time>" || b == "<time>") return a == b;
  if (a.find('.') == std::string::npos || b.find('.') == std::string::npos) return a == b;
  const double x = std::stod(a), y = std::stod(b);
  return std::abs(x - y) <= 1e-3 * std::max(std::abs(x), std::abs(y));
}

bool lines_match(const std::string& readme, const std::string& printed) {
  const Shape a = shape_of(readme), b = shape_of(printed);
  if (a.text != b.text || a.numbers.size() != b.numbers.size()) return false;
  for (size_t i = 0; i < a.numbers.size(); ++i) {
    if (!numbers_match(a.numbers[i], b.numbers[i])) return false;
  }
  return true;
}

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

  const std::vector<std::string> code = readme_code_lines();
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
