#include "data/byte_level.h"

#include "data/utf8.h"

namespace ll::byte_level {

namespace {

// bytes_to_unicode(): printable Latin-1 bytes stand for themselves, the others for 256 + n.
struct Tables {
  std::array<uint32_t, 256> code_point{};
  std::array<std::string, 256> chars;
  std::array<int16_t, 324> byte{};  // [code point < 324] its byte, or -1
  Tables() {
    byte.fill(-1);
    int n = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
      code_point[size_t(b)] = printable ? uint32_t(b) : uint32_t(256 + n++);
      utf8::append(chars[size_t(b)], code_point[size_t(b)]);
      byte[code_point[size_t(b)]] = int16_t(b);
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
  const auto& byte = tables().byte;
  if (cp >= byte.size() || byte[cp] < 0) return std::nullopt;
  return static_cast<unsigned char>(byte[cp]);
}

}  // namespace ll::byte_level
