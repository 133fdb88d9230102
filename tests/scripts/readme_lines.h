#pragma once
// Checking the README's examples against what a script printed: its sections' lines, and
// output lines compared as text between numbers, numbers within 1e-3 (times and speeds aside,
// integers exact).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "tests/model/model_fixtures.h"

namespace ll::test {

inline std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    while (!line.empty() && (line.back() == ' ' || line.back() == '\r')) line.pop_back();
    lines.push_back(line);
  }
  return lines;
}

inline void replace_all(std::string& s, const std::string& from, const std::string& to) {
  for (size_t at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size())) {
    s.replace(at, from.size(), to);
  }
}

// The lines of the README's "## <section>" section.
inline std::vector<std::string> readme_section_lines(const std::string& section) {
  const std::string readme = read_bytes(std::filesystem::path(LL_SOURCE_DIR) / "README.md");
  const size_t begin = readme.find("\n## " + section + "\n");
  REQUIRE_MESSAGE(begin != std::string::npos, "README.md has no \"## ", section, "\" section");
  const size_t end = readme.find("\n## ", begin + 1);
  return lines_of(readme.substr(begin, end - begin));
}

// Its indented (code) lines, indentation removed.
inline std::vector<std::string> readme_code_lines(const std::string& section) {
  std::vector<std::string> code;
  for (const std::string& line : readme_section_lines(section)) {
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

inline Shape shape_of(const std::string& line) {
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

inline bool numbers_match(const std::string& a, const std::string& b) {
  if (a == "<time>" || b == "<time>") return a == b;
  if (a.find('.') == std::string::npos || b.find('.') == std::string::npos) return a == b;
  const double x = std::stod(a), y = std::stod(b);
  return std::abs(x - y) <= 1e-3 * std::max(std::abs(x), std::abs(y));
}

inline bool lines_match(const std::string& readme, const std::string& printed) {
  const Shape a = shape_of(readme), b = shape_of(printed);
  if (a.text != b.text || a.numbers.size() != b.numbers.size()) return false;
  for (size_t i = 0; i < a.numbers.size(); ++i) {
    if (!numbers_match(a.numbers[i], b.numbers[i])) return false;
  }
  return true;
}

}  // namespace ll::test
