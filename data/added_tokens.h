#pragma once
// Finding a tokenizer.json's added tokens in text before it is pre-tokenized, as the library's
// AddedVocabulary does: leftmost-longest matches, then the single_word, lstrip and rstrip flags.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace ll {

// One span of a text: an added token (id >= 0) or text to tokenize (id -1). [begin, end) bytes.
struct TextSpan {
  size_t begin = 0, end = 0;
  int32_t id = -1;
};

class AddedTokenMatcher {
 public:
  struct Token {
    std::string pattern;  // the content (normalized content for normalized tokens)
    int32_t id = 0;
    bool single_word = false, lstrip = false, rstrip = false;
  };
  explicit AddedTokenMatcher(std::vector<Token> tokens);

  bool empty() const { return tokens_.empty(); }
  // `text` (valid UTF-8) cut into spans covering it in order; text spans may be empty.
  std::vector<TextSpan> split(std::string_view text) const;

 private:
  std::vector<Token> tokens_;
  std::vector<std::vector<int32_t>> by_first_byte_;  // [256] indices into tokens_, longest first
};

}  // namespace ll
