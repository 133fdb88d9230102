#pragma once
// GPT-2's byte-to-character table that byte-level BPE vocabularies are written in (the
// library's ByteLevel pre-tokenizer and decoder): each byte is one printable character.
#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace ll::byte_level {

// The UTF-8 of the character that stands for each byte. [256]
const std::array<std::string, 256>& byte_chars();

// `text`'s bytes, each replaced by its character.
std::string encode(std::string_view text);

// The byte a character (code point) stands for, if it is one of the 256.
std::optional<unsigned char> byte_of(uint32_t code_point);

}  // namespace ll::byte_level
