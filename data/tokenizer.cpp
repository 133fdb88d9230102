#include "data/tokenizer.h"

#include <sentencepiece_processor.h>

#include <filesystem>
#include <fstream>

#include "common/error.h"
#include "data/hf_tokenizer.h"
#include "data/tokenizer_config.h"
#include "data/utf8.h"

namespace ll {

namespace {

// A tokenizer.json is JSON (first byte '{'); a tokenizer.model is a protobuf.
bool looks_like_json(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  char c = 0;
  while (in.get(c)) {
    if (c != ' ' && c != '\n' && c != '\r' && c != '\t') return c == '{';
  }
  return false;
}

// The id the files name for BOS or EOS, or -1.
int resolve_special(const SpecialTokenRef& ref, const HfTokenizer& tok, const char* what,
                    const std::string& source) {
  if (ref.content) {
    const auto id = tok.token_id(*ref.content);
    LL_CHECK(id.has_value(), "{}: {} \"{}\" is not a token of the tokenizer", source, what,
             *ref.content);
    return *id;
  }
  if (ref.id) {
    LL_CHECK(*ref.id < tok.vocab_size(), "{}: {} id {} is outside the vocabulary ({} ids)", source,
             what, *ref.id, tok.vocab_size());
    return *ref.id;
  }
  return -1;
}

}  // namespace

struct Tokenizer::Impl {
  std::string path;
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp;
  std::unique_ptr<HfTokenizer> hf;
  int bos = -1, eos = -1;
  bool add_bos = false;
};

Tokenizer::Tokenizer(const std::string& path) : impl_(std::make_unique<Impl>()) {
  impl_->path = path;
  LL_CHECK(std::filesystem::is_regular_file(path),
           "{}: tokenizer not found; pass the model directory's tokenizer.json or "
           "tokenizer.model (--tokenizer FILE or -m MODEL_DIR)",
           path);
  if (!looks_like_json(path)) {
    impl_->sp = std::make_unique<sentencepiece::SentencePieceProcessor>();
    const auto status = impl_->sp->Load(path);
    LL_CHECK(status.ok(),
             "{}: neither a tokenizer.json nor a SentencePiece model ({}); pass the model "
             "directory's tokenizer.json or tokenizer.model",
             path, status.ToString());
    impl_->bos = impl_->sp->bos_id();
    impl_->eos = impl_->sp->eos_id();
    impl_->add_bos = impl_->bos >= 0;  // Llama-2's SentencePiece tokenizers add BOS
    return;
  }
  impl_->hf = std::make_unique<HfTokenizer>(hf::read_tokenizer_json(path), path);
  const HfTokenizer& tok = *impl_->hf;
  const TokenizerSpecials sp =
      read_tokenizer_specials(std::filesystem::path(path).parent_path().string());
  const std::string source = sp.source.empty() ? path : sp.source;
  impl_->bos = resolve_special(sp.bos, tok, "bos_token", source);
  impl_->eos = resolve_special(sp.eos, tok, "eos_token", source);
  // Without any file naming BOS, the post-processor's leading special token is it.
  if (!sp.bos.given && tok.template_prefix_token())
    impl_->bos = *tok.token_id(*tok.template_prefix_token());
  if (sp.add_bos_token) {
    impl_->add_bos = *sp.add_bos_token;
  } else {  // what encode(add_special_tokens=True) does: the post-processor's template
    impl_->add_bos = tok.template_prefix_token().has_value() &&
                     tok.token_id(*tok.template_prefix_token()) == impl_->bos;
  }
  LL_CHECK(!impl_->add_bos || impl_->bos >= 0,
           "{}: add_bos_token is true but no bos_token is named", source);
}

Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;

std::vector<int> Tokenizer::encode(std::string_view text) const {
  if (impl_->hf) {
    if (utf8::is_valid(text)) return impl_->hf->encode(text);
    return impl_->hf->encode(utf8::make_valid(text));
  }
  std::vector<int> ids;
  const auto status = impl_->sp->Encode(text, &ids);
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
  if (impl_->hf) return impl_->hf->decode(ids);
  std::string text;
  const auto status = impl_->sp->Decode(ids, &text);
  LL_CHECK(status.ok(), "tokenizer: cannot decode {} ids: {}", ids.size(), status.ToString());
  return text;
}

int Tokenizer::vocab_size() const {
  return impl_->hf ? impl_->hf->vocab_size() : impl_->sp->GetPieceSize();
}
int Tokenizer::bos_id() const { return impl_->bos; }
int Tokenizer::eos_id() const { return impl_->eos; }
bool Tokenizer::add_bos() const { return impl_->add_bos; }

std::optional<int> Tokenizer::token_id(std::string_view piece) const {
  if (impl_->hf) return impl_->hf->token_id(piece);
  const int id = impl_->sp->PieceToId(piece);
  if (id < 0 || impl_->sp->IdToPiece(id) != piece) return std::nullopt;  // unknown -> unk id
  return id;
}

TokenizerKind Tokenizer::kind() const {
  return impl_->hf ? TokenizerKind::HuggingFaceJson : TokenizerKind::SentencePiece;
}
const std::string& Tokenizer::path() const { return impl_->path; }

std::string Tokenizer::describe() const {
  return fmt::format("{} ({}, {} ids, bos {}{}, eos {})", impl_->path,
                     impl_->hf ? "tokenizer.json" : "SentencePiece", vocab_size(),
                     impl_->bos < 0 ? std::string("none") : std::to_string(impl_->bos),
                     impl_->add_bos    ? " added"
                     : impl_->bos >= 0 ? " not added"
                                       : "",
                     impl_->eos < 0 ? std::string("none") : std::to_string(impl_->eos));
}

}  // namespace ll
