#pragma once
// UTF-8 helpers for the tokenizers: code point decoding, invalid input made valid the way
// Python's bytes.decode("utf-8", "replace") and Rust's String::from_utf8_lossy do it, and the
// whitespace sets the Hugging Face library and its chat templates test against.
#include <cstdint>
#include <string>
#include <string_view>

namespace ll::utf8 {

// Length in bytes of the valid UTF-8 sequence at s[i], or 0 when it is not one (overlong,
// surrogate, > U+10FFFF, truncated, stray continuation byte).
size_t valid_sequence_length(std::string_view s, size_t i);

// Whether every byte of `s` belongs to a valid sequence.
bool is_valid(std::string_view s);

// `s` with each maximal invalid subpart replaced by U+FFFD (the Unicode "substitution of
// maximal subparts" practice, which Python's "replace" error handler follows).
std::string make_valid(std::string_view s);

// The code point of the valid sequence at s[i] (valid_sequence_length(s, i) > 0 required).
uint32_t decode_at(std::string_view s, size_t i, size_t len);

void append(std::string& out, uint32_t code_point);

// Rust's char::is_whitespace (Unicode White_Space).
bool is_rust_whitespace(uint32_t c);
// Python's str.isspace() (what Jinja's trim filter strips).
bool is_python_space(uint32_t c);

// `s` without leading and trailing Python whitespace (Jinja's `| trim`); `s` must be valid.
std::string_view python_strip(std::string_view s);

}  // namespace ll::utf8
