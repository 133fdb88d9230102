#pragma once
// A Hugging Face tokenizer.json tokenizer with the ids of the `tokenizers` library's
// encode(text, add_special_tokens=False) and the text of its decode(ids,
// skip_special_tokens=False): added tokens first, then per piece the normalizer, the
// pre-tokenizer and the BPE model.
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "data/added_tokens.h"
#include "data/bpe.h"
#include "data/hf_decoder.h"
#include "data/hf_normalizer.h"
#include "data/hf_pre_tokenizer.h"
#include "data/tokenizer_json.h"

namespace ll {

class HfTokenizer {
 public:
  // Throws ll::Error naming `name` for anything inconsistent (merges, added token ids, regexes).
  HfTokenizer(const hf::TokenizerJson& spec, const std::string& name);

  // `text` must be valid UTF-8 (the facade makes it so). Thread-safe.
  std::vector<int> encode(std::string_view text) const;
  // Throws ll::Error for an id without a token.
  std::string decode(const std::vector<int>& ids) const;

  // Highest id + 1 over the model and the added tokens.
  int vocab_size() const { return vocab_size_; }
  std::optional<int> token_id(std::string_view piece) const;
  // The post-processor's leading special token (the family's BOS), if any.
  const std::optional<std::string>& template_prefix_token() const { return prefix_token_; }

 private:
  void encode_piece(std::string piece, bool at_start, std::vector<int>& out) const;

  Bpe bpe_;
  HfNormalizer normalizer_;
  HfPreTokenizer pre_tokenizer_;
  HfDecoder decoder_;
  AddedTokenMatcher raw_tokens_;         // normalized: false, matched in the original text
  AddedTokenMatcher normalized_tokens_;  // normalized: true, matched after normalizing
  PieceIds added_ids_;                   // content -> id
  std::unordered_map<int32_t, std::string> added_;  // id -> content
  std::optional<std::string> prefix_token_;
  int vocab_size_ = 0;
};

}  // namespace ll
