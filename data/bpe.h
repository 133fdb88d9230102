#pragma once
// The BPE model of a tokenizer.json, as the Hugging Face library applies it to one
// pre-tokenized word: characters to ids (with byte fallback or the unknown token), then merges
// by rank, lowest first, leftmost first among equal ranks.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "data/tokenizer_json.h"

namespace ll {

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using PieceIds = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

class Bpe {
 public:
  // Throws ll::Error naming `name` for a merge whose result is not in the vocabulary.
  Bpe(const hf::BpeModel& model, const std::string& name);

  // Appends the ids of `word` (non-empty, in the vocabulary's alphabet) to `out`.
  void encode_word(std::string_view word, std::vector<int>& out) const;

  std::optional<int32_t> id_of(std::string_view piece) const;
  // The piece of `id`, or nullptr when the vocabulary has no such id.
  const std::string* piece_of(int32_t id) const;
  int32_t max_id() const { return int32_t(pieces_.size()) - 1; }

 private:
  struct Merge {
    int32_t rank;
    int32_t new_id;
  };
  static uint64_t pair_key(int32_t a, int32_t b) {
    return uint64_t(uint32_t(a)) << 32 | uint32_t(b);
  }
  const Merge* find_merge(int32_t a, int32_t b) const;

  PieceIds vocab_;
  std::vector<std::string> pieces_;             // [max id + 1] piece by id ("" for holes)
  std::vector<bool> has_piece_;                 // [max id + 1]
  std::unordered_map<uint64_t, Merge> merges_;  // (left id, right id) -> rank, merged id
  std::optional<int32_t> unk_id_;
  std::string prefix_, suffix_;  // continuing_subword_prefix, end_of_word_suffix
  bool fuse_unk_ = false, byte_fallback_ = false, ignore_merges_ = false;
  std::vector<std::optional<int32_t>> byte_ids_;  // [256] ids of <0xNN> (byte fallback)
};

}  // namespace ll
