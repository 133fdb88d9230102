#pragma once
// A tokenizer.json normalizer chain (NFC/NFD/NFKC/NFKD through ICU, Prepend, Replace) applied
// to one piece of text, as the library normalizes each piece between added tokens.
#include <memory>
#include <string>
#include <vector>

#include "data/pcre2_regex.h"
#include "data/tokenizer_json.h"

namespace ll {

class HfNormalizer {
 public:
  HfNormalizer(const std::vector<hf::Normalizer>& steps, const std::string& name);
  ~HfNormalizer();
  HfNormalizer(HfNormalizer&&) noexcept;
  HfNormalizer& operator=(HfNormalizer&&) noexcept;

  bool empty() const { return steps_.empty(); }
  // `text` (valid UTF-8) normalized in place.
  void apply(std::string& text) const;

 private:
  struct Step;
  std::vector<Step> steps_;
};

// Replaces every match of a String or Regex pattern (the Replace normalizer and decoder).
class PatternReplacer {
 public:
  PatternReplacer(const hf::Pattern& pattern, std::string content, const std::string& where);
  std::string apply(const std::string& text) const;

 private:
  std::string literal_;                // String pattern
  std::unique_ptr<Pcre2Regex> regex_;  // Regex pattern
  std::string content_;
};

}  // namespace ll
