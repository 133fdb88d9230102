#include "data/added_tokens.h"

#include <unicode/uchar.h>

#include <algorithm>

#include "data/utf8.h"

namespace ll {

namespace {

// The code point that ends at `end` (end > 0) / starts at `begin` (begin < size).
uint32_t last_char(std::string_view s, size_t end) {
  size_t start = end - 1;
  while (start > 0 && (uint8_t(s[start]) & 0xC0) == 0x80) --start;
  const size_t n = utf8::valid_sequence_length(s, start);
  return n == 0 ? 0xFFFD : utf8::decode_at(s, start, n);
}
uint32_t first_char(std::string_view s, size_t begin) {
  const size_t n = utf8::valid_sequence_length(s, begin);
  return n == 0 ? 0xFFFD : utf8::decode_at(s, begin, n);
}

// Rust's char::is_alphanumeric (Alphabetic or a Number category) or '_': a "word" character
// for single_word tokens.
bool is_word_char(uint32_t c) {
  if (c == '_') return true;
  if (u_isUAlphabetic(UChar32(c))) return true;
  const int8_t t = u_charType(UChar32(c));
  return t == U_DECIMAL_DIGIT_NUMBER || t == U_LETTER_NUMBER || t == U_OTHER_NUMBER;
}

}  // namespace

AddedTokenMatcher::AddedTokenMatcher(std::vector<Token> tokens)
    : tokens_(std::move(tokens)), by_first_byte_(256) {
  for (size_t i = 0; i < tokens_.size(); ++i) {
    if (tokens_[i].pattern.empty()) continue;
    by_first_byte_[uint8_t(tokens_[i].pattern[0])].push_back(int32_t(i));
  }
  for (auto& list : by_first_byte_) {
    std::stable_sort(list.begin(), list.end(), [&](int32_t a, int32_t b) {
      return tokens_[size_t(a)].pattern.size() > tokens_[size_t(b)].pattern.size();
    });
  }
}

std::vector<TextSpan> AddedTokenMatcher::split(std::string_view text) const {
  std::vector<TextSpan> out;
  size_t done = 0;  // end of the last span emitted
  size_t pos = 0;   // where the next match may start
  while (pos < text.size()) {
    const auto& candidates = by_first_byte_[uint8_t(text[pos])];
    const Token* hit = nullptr;
    for (int32_t i : candidates) {  // longest first: the first that fits is leftmost-longest
      const Token& t = tokens_[size_t(i)];
      if (text.substr(pos, t.pattern.size()) == t.pattern) {
        hit = &t;
        break;
      }
    }
    if (hit == nullptr) {
      ++pos;
      continue;
    }
    size_t begin = pos, end = pos + hit->pattern.size();
    pos = end;  // the search resumes after the match even when the flags discard it
    if (hit->single_word) {
      const bool space_before = begin == 0 || !is_word_char(last_char(text, begin));
      const bool space_after = end == text.size() || !is_word_char(first_char(text, end));
      if (!space_before || !space_after) continue;
    }
    if (hit->lstrip) {
      while (begin > 0) {
        size_t start = begin - 1;
        while (start > 0 && (uint8_t(text[start]) & 0xC0) == 0x80) --start;
        if (!utf8::is_rust_whitespace(last_char(text, begin))) break;
        begin = start;
      }
    }
    if (hit->rstrip) {
      while (end < text.size()) {
        const size_t n = std::max<size_t>(utf8::valid_sequence_length(text, end), 1);
        if (!utf8::is_rust_whitespace(first_char(text, end))) break;
        end += n;
      }
    }
    begin = std::max(begin, done);  // lstrip never reaches back into an earlier token
    if (done < begin) out.push_back(TextSpan{done, begin, -1});
    out.push_back(TextSpan{begin, end, hit->id});
    done = end;
  }
  if (done < text.size() || out.empty()) out.push_back(TextSpan{done, text.size(), -1});
  return out;
}

}  // namespace ll
