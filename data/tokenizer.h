#pragma once
// The tokenizer of a model: a SentencePiece tokenizer.model (Llama-2) or a Hugging Face
// tokenizer.json (Llama-3, Qwen2.5, Mistral-Nemo byte-level BPE; Llama-2 derivatives'
// Metaspace/byte-fallback BPE), behind one interface. docs/formats/tokenizer-json.md.
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ll {

enum class TokenizerKind { SentencePiece, HuggingFaceJson };

class Tokenizer {
 public:
  // `path`: a tokenizer.json (BOS/EOS from tokenizer_config.json, generation_config.json and
  // config.json beside it) or a tokenizer.model. Throws ll::Error naming the path if it is
  // missing, damaged or uses something unsupported.
  explicit Tokenizer(const std::string& path);
  ~Tokenizer();
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;

  // Text to ids, without BOS/EOS (callers add them: see add_bos()). Special-token text
  // ("<|eot_id|>") becomes its id, as the library does. tokenizer.json: invalid UTF-8 is
  // replaced by U+FFFD first (what Python's decode(errors="replace") gives the library).
  // Thread-safe.
  std::vector<int> encode(std::string_view text) const;
  // Ids to text; special tokens are kept as their text. Throws ll::Error for an unknown id.
  std::string decode(const std::vector<int>& ids) const;
  int vocab_size() const;  // highest id + 1
  int bos_id() const;      // -1: the family has none (Qwen2.5)
  int eos_id() const;      // -1: none
  // Whether the family starts a sequence with BOS (Llama: yes; Qwen2.5: no).
  bool add_bos() const;
  // The id of a piece or special token ("<|eot_id|>", "<|im_start|>"), if it has one.
  std::optional<int> token_id(std::string_view piece) const;
  TokenizerKind kind() const;
  const std::string& path() const;
  // One line for setup output: kind, ids, BOS/EOS.
  std::string describe() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ll
