#include "common/byte_size.h"

#include <cctype>
#include <cmath>
#include <fstream>
#include <sstream>

#include "common/error.h"

namespace ll {

int64_t parse_byte_size(std::string_view text, std::string_view what) {
  const std::string s(text);
  size_t pos = 0;
  double value = 0.0;
  try {
    value = std::stod(s, &pos);
  } catch (const std::exception&) {
    pos = 0;
  }
  auto bad = [&]() {
    fail("{}: \"{}\" is not a size (a number with K, M, G or T: e.g. 80GB, 512G, 4096MB)", what, s);
  };
  if (pos == 0 || !std::isfinite(value)) bad();
  std::string unit;
  for (char c : s.substr(pos))
    if (!std::isspace(static_cast<unsigned char>(c)))
      unit += char(std::toupper(static_cast<unsigned char>(c)));
  if (unit.size() >= 2 && unit.substr(unit.size() - 2) == "IB") unit.resize(unit.size() - 2);
  if (!unit.empty() && unit.back() == 'B') unit.pop_back();
  double scale = 1.0;
  if (unit == "K")
    scale = 1024.0;
  else if (unit == "M")
    scale = 1024.0 * 1024.0;
  else if (unit == "G")
    scale = 1024.0 * 1024.0 * 1024.0;
  else if (unit == "T")
    scale = 1024.0 * 1024.0 * 1024.0 * 1024.0;
  else if (!unit.empty())
    bad();
  const double bytes = value * scale;
  LL_CHECK(bytes >= 1.0 && bytes < 9.0e18, "{}: {} is not a usable size", what, s);
  return int64_t(bytes);
}

int64_t host_memory_available() {
  std::ifstream in("/proc/meminfo");
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream fields(line);
    std::string key;
    int64_t kib = 0;
    if (fields >> key >> kib && key == "MemAvailable:") return kib * 1024;
  }
  return -1;
}

}  // namespace ll
