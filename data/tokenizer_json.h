#pragma once
// The parts of a Hugging Face tokenizer.json that decide the ids, read and validated: the
// normalizer, pre-tokenizer, BPE model, decoder, added tokens and whether the post-processor
// starts a sequence with a special token. Sequences of normalizers, pre-tokenizers and
// decoders are flattened (applying them in order is what a Sequence does). Anything else the
// file names (another model type, an unknown normalizer, ...) is refused with an ll::Error
// naming the field; docs/formats/tokenizer-json.md lists what is supported.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace ll::hf {

// {"String": s} or {"Regex": r}.
struct Pattern {
  bool regex = false;
  std::string text;
};

enum class PrependScheme { Always, First, Never };

struct Normalizer {
  enum class Kind { Nfc, Nfd, Nfkc, Nfkd, Prepend, Replace } kind = Kind::Nfc;
  std::string prepend;  // Prepend
  Pattern pattern;      // Replace
  std::string content;  // Replace
};

enum class SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

struct PreTokenizer {
  enum class Kind { Split, ByteLevel, Metaspace } kind = Kind::Split;
  Pattern pattern;  // Split
  SplitBehavior behavior = SplitBehavior::Isolated;
  bool invert = false;
  bool add_prefix_space = false;  // ByteLevel
  bool use_regex = true;          // ByteLevel: split with the GPT-2 regex first
  std::string replacement;        // Metaspace: one character
  PrependScheme prepend_scheme = PrependScheme::Always;
  bool split = true;  // Metaspace
};

struct Decoder {
  enum class Kind {
    ByteLevel,
    Replace,
    ByteFallback,
    Fuse,
    Strip,
    Metaspace
  } kind = Kind::ByteLevel;
  Pattern pattern;              // Replace
  std::string content;          // Replace; Strip: one character
  int64_t start = 0, stop = 0;  // Strip: characters to cut at each end
  std::string replacement;      // Metaspace
  PrependScheme prepend_scheme = PrependScheme::Always;
};

struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool single_word = false, lstrip = false, rstrip = false, normalized = true, special = false;
};

struct BpeModel {
  std::vector<std::pair<std::string, int32_t>> vocab;       // piece -> id, file order
  std::vector<std::pair<std::string, std::string>> merges;  // rank order
  std::optional<std::string> unk_token;
  std::string continuing_subword_prefix, end_of_word_suffix;
  bool fuse_unk = false, byte_fallback = false, ignore_merges = false;
};

struct TokenizerJson {
  std::vector<Normalizer> normalizers;
  std::vector<PreTokenizer> pre_tokenizers;
  BpeModel model;
  bool has_decoder = false;  // no decoder: the library joins tokens with spaces
  std::vector<Decoder> decoders;
  std::vector<AddedToken> added_tokens;
  // The first item of post_processor's single-sequence template when it is a special token
  // (Llama: "<s>", "<|begin_of_text|>"): the library adds it with add_special_tokens.
  std::optional<std::string> template_prefix_token;
};

// Ids are at most this (Llama-3 and Qwen2.5 stay under 2^18; a bigger one is damage).
constexpr int64_t kMaxTokenId = (int64_t(1) << 24) - 1;

// Parses `text` (the file's bytes); `name` stands for the file in messages.
TokenizerJson parse_tokenizer_json(std::string_view text, const std::string& name);
// Reads and parses the file at `path`.
TokenizerJson read_tokenizer_json(const std::string& path);

}  // namespace ll::hf
