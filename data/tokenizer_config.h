#pragma once
// BOS/EOS of a Hugging Face tokenizer, from the files beside its tokenizer.json:
// tokenizer_config.json (bos_token, eos_token, add_bos_token), then generation_config.json and
// config.json (bos_token_id, eos_token_id; the first of a list).
#include <optional>
#include <string>

namespace ll {

// One special token as the files name it: by its text or by its id.
struct SpecialTokenRef {
  bool given = false;  // the files say something (null included: "this family has none")
  std::optional<std::string> content;
  std::optional<int> id;
};

struct TokenizerSpecials {
  SpecialTokenRef bos, eos;
  std::optional<bool> add_bos_token;  // tokenizer_config.json's, when it has one
  std::string source;                 // the files read, for messages
};

// Reads what exists of the three files in `dir`; a missing file is not an error, a damaged
// one is (ll::Error naming it and the field).
TokenizerSpecials read_tokenizer_specials(const std::string& dir);

}  // namespace ll
