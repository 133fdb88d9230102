#pragma once
// A tokenizer.json pre-tokenizer chain (Split with a PCRE2 regex or a string, ByteLevel,
// Metaspace) cutting one normalized piece into the words the BPE model encodes.
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "data/pcre2_regex.h"
#include "data/tokenizer_json.h"

namespace ll {

class HfPreTokenizer {
 public:
  HfPreTokenizer(const std::vector<hf::PreTokenizer>& steps, const std::string& name);
  ~HfPreTokenizer();
  HfPreTokenizer(HfPreTokenizer&&) noexcept;
  HfPreTokenizer& operator=(HfPreTokenizer&&) noexcept;

  // Calls `word` for each non-empty word of `piece`, in order. `at_start`: the piece starts the
  // original text (Metaspace's prepend_scheme "first").
  void run(std::string piece, bool at_start,
           const std::function<void(std::string_view)>& word) const;

 private:
  struct Step;
  void run_from(size_t step, std::string piece, bool at_start,
                const std::function<void(std::string_view)>& word) const;
  std::vector<Step> steps_;
};

}  // namespace ll
