#pragma once
// A compiled PCRE2 regular expression (UTF mode, Unicode properties, JIT where available): the
// engine behind the tokenizer.json Split pre-tokenizer and the Replace normalizer/decoder.
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ll {

class Pcre2Regex {
 public:
  // Throws ll::Error naming `where` (e.g. "tokenizer.json: pre_tokenizer.pattern.Regex") with
  // PCRE2's message and the offset of the error in the pattern.
  Pcre2Regex(std::string_view pattern, const std::string& where);
  ~Pcre2Regex();
  Pcre2Regex(Pcre2Regex&&) noexcept;
  Pcre2Regex& operator=(Pcre2Regex&&) noexcept;

  // Every non-overlapping match in `text` (valid UTF-8), left to right, as [begin, end) byte
  // offsets; an empty match advances by one character. Thread-safe.
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view text) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ll
