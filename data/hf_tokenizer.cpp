#include "data/hf_tokenizer.h"

#include "common/error.h"

namespace ll {

namespace {

AddedTokenMatcher matcher(const hf::TokenizerJson& spec, bool normalized,
                          const HfNormalizer& normalizer) {
  std::vector<AddedTokenMatcher::Token> tokens;
  for (const hf::AddedToken& t : spec.added_tokens) {
    if (t.normalized != normalized) continue;
    std::string pattern = t.content;
    if (normalized) normalizer.apply(pattern);  // matched against normalized text
    tokens.push_back({pattern, t.id, t.single_word, t.lstrip, t.rstrip});
  }
  return AddedTokenMatcher(std::move(tokens));
}

}  // namespace

HfTokenizer::HfTokenizer(const hf::TokenizerJson& spec, const std::string& name)
    : bpe_(spec.model, name),
      normalizer_(spec.normalizers, name),
      pre_tokenizer_(spec.pre_tokenizers, name),
      decoder_(spec.has_decoder, spec.decoders, name),
      raw_tokens_(matcher(spec, false, normalizer_)),
      normalized_tokens_(matcher(spec, true, normalizer_)),
      prefix_token_(spec.template_prefix_token) {
  int32_t max_id = bpe_.max_id();
  for (const hf::AddedToken& t : spec.added_tokens) {
    // An added token that is also a model piece must keep the model's id (Llama-2's <s>);
    // the library would renumber a mismatch, which no real file has: refuse it.
    const auto model_id = bpe_.id_of(t.content);
    LL_CHECK(!model_id || *model_id == t.id,
             "{}: added_tokens: \"{}\" has id {} but model.vocab gives it id {}", name, t.content,
             t.id, model_id.value_or(-1));
    const std::string* piece = bpe_.piece_of(t.id);
    LL_CHECK(piece == nullptr || *piece == t.content,
             "{}: added_tokens: id {} of \"{}\" is the model's piece \"{}\"", name, t.id, t.content,
             piece ? *piece : "");
    added_ids_.emplace(t.content, t.id);
    added_.emplace(t.id, t.content);
    max_id = std::max(max_id, t.id);
  }
  vocab_size_ = int(max_id) + 1;
  if (prefix_token_) {
    LL_CHECK(token_id(*prefix_token_).has_value(),
             "{}: post_processor: the template's special token \"{}\" is not in the vocabulary",
             name, *prefix_token_);
  }
}

std::optional<int> HfTokenizer::token_id(std::string_view piece) const {
  const auto it = added_ids_.find(piece);
  if (it != added_ids_.end()) return it->second;
  const auto id = bpe_.id_of(piece);
  if (id) return *id;
  return std::nullopt;
}

void HfTokenizer::encode_piece(std::string piece, bool at_start, std::vector<int>& out) const {
  pre_tokenizer_.run(std::move(piece), at_start,
                     [&](std::string_view word) { bpe_.encode_word(word, out); });
}

std::vector<int> HfTokenizer::encode(std::string_view text) const {
  std::vector<int> out;
  for (const TextSpan& raw : raw_tokens_.split(text)) {
    if (raw.id >= 0) {
      out.push_back(raw.id);
      continue;
    }
    if (raw.end == raw.begin) continue;
    std::string piece(text.substr(raw.begin, raw.end - raw.begin));
    normalizer_.apply(piece);
    const bool at_start = raw.begin == 0;
    if (normalized_tokens_.empty()) {
      encode_piece(std::move(piece), at_start, out);
      continue;
    }
    for (const TextSpan& s : normalized_tokens_.split(piece)) {
      if (s.id >= 0) {
        out.push_back(s.id);
      } else if (s.end > s.begin) {
        encode_piece(piece.substr(s.begin, s.end - s.begin), at_start && s.begin == 0, out);
      }
    }
  }
  return out;
}

std::string HfTokenizer::decode(const std::vector<int>& ids) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    const auto it = added_.find(ids[i]);
    if (it != added_.end()) {
      tokens.push_back(it->second);
      continue;
    }
    const std::string* piece = bpe_.piece_of(ids[i]);
    LL_CHECK(piece != nullptr,
             "tokenizer: cannot decode id {} at position {}: the vocabulary has no such id "
             "(ids 0..{})",
             ids[i], i, vocab_size_ - 1);
    tokens.push_back(*piece);
  }
  return decoder_.decode(std::move(tokens));
}

}  // namespace ll
