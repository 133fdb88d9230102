#include "data/byte_level.h"

#include "data/utf8.h"

namespace ll::byte_level {

namespace {

// bytes_to_unicode(): printable Latin-1 bytes stand for themselves, the others for 256 + n.
struct Tables {
  std::array<uint32_t, 256> code_point{};
  std::array<std::string, 256> chars;
  Tables() {
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
      code_point[size_t(b)] = printable ? uint32_t(b) : uint32_t(256 + n++);
      utf8::append(chars[size_t(b)], code_point[size_t(b)]);
    }
  }
};

const Tables& tables() {
  static const Tables t;
  return t;
}

}  // namespace

const std::array<std::string, 256>& byte_chars() { return tables().chars; }

std::string encode(std::string_view text) {
  const auto& chars = tables().chars;
  std::string out;
  out.reserve(text.size() * 2);
  for (unsigned char c : text) out += chars[c];
  return out;
}

std::optional<unsigned char> byte_of(uint32_t cp) {
  if (cp < 256) {
    const bool printable = (cp >= 33 && cp <= 126) || (cp >= 161 && cp <= 172) || cp >= 174;
    if (printable) return static_cast<unsigned char>(cp);
    return std::nullopt;
  }
  if (cp >= 256 + 68) return std::nullopt;  // 68 bytes are not printable
  const auto& t = tables().code_point;
  for (int b = 0; b < 256; ++b) {
    if (t[size_t(b)] == cp) return static_cast<unsigned char>(b);
  }
  return std::nullopt;
}

}  // namespace ll::byte_level
