#include "data/tokenizer.h"

#include <sentencepiece_processor.h>

#include <filesystem>

#include "common/error.h"

namespace ll {

Tokenizer::Tokenizer(const std::string& model_path)
    : sp_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {
  // SentencePiece's own "not found" message does not say which flag to fix; ours does.
  LL_CHECK(std::filesystem::is_regular_file(model_path),
           "{}: tokenizer model not found; pass the tokenizer.model of the model directory "
           "(--tokenizer FILE or -m MODEL_DIR)",
           model_path);
  auto status = sp_->Load(model_path);
  LL_CHECK(status.ok(),
           "{}: not a SentencePiece model ({}); pass the tokenizer.model of the model directory "
           "(a Hugging Face tokenizer.json alone is not supported)",
           model_path, status.ToString());
}

Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;

std::vector<int> Tokenizer::encode(const std::string& text) const {
  std::vector<int> ids;
  auto status = sp_->Encode(text, &ids);
  LL_CHECK(status.ok(), "tokenizer: cannot encode a text of {} bytes: {}", text.size(),
           status.ToString());
  return ids;
}

std::string Tokenizer::decode(const std::vector<int>& ids) const {
  const int n = vocab_size();
  for (size_t i = 0; i < ids.size(); ++i) {
    LL_CHECK(ids[i] >= 0 && ids[i] < n,
             "tokenizer: cannot decode id {} at position {}: the vocabulary has {} ids", ids[i], i,
             n);
  }
  std::string text;
  auto status = sp_->Decode(ids, &text);
  LL_CHECK(status.ok(), "tokenizer: cannot decode {} ids: {}", ids.size(), status.ToString());
  return text;
}

int Tokenizer::vocab_size() const { return sp_->GetPieceSize(); }
int Tokenizer::bos_id() const { return sp_->bos_id(); }
int Tokenizer::eos_id() const { return sp_->eos_id(); }

}  // namespace ll
