#include "data/token_file.h"

#include <algorithm>
#include <cstring>

#include "common/error.h"
#include "data/shard_format.h"

namespace ll {

namespace {

uint32_t token_at(const uint8_t* tokens, int bytes_per_token, int64_t i) {
  if (bytes_per_token == 2) {
    uint16_t v;
    std::memcpy(&v, tokens + 2 * i, 2);
    return v;
  }
  uint32_t v;
  std::memcpy(&v, tokens + 4 * i, 4);
  return v;
}

// First index whose id is >= vocab_size, or n when all are in range. Branch-free max
// reduction first (fast), the exact position only when something is wrong.
int64_t first_out_of_vocab(const uint8_t* tokens, int bytes_per_token, int64_t n,
                           int64_t vocab_size) {
  uint32_t max_id = 0;
  if (bytes_per_token == 2) {
    for (int64_t i = 0; i < n; ++i) max_id = std::max<uint32_t>(max_id, token_at(tokens, 2, i));
  } else {
    for (int64_t i = 0; i < n; ++i) max_id = std::max(max_id, token_at(tokens, 4, i));
  }
  if (n == 0 || int64_t(max_id) < vocab_size) return n;
  for (int64_t i = 0; i < n; ++i) {
    if (int64_t(token_at(tokens, bytes_per_token, i)) >= vocab_size) return i;
  }
  return n;
}

}  // namespace

TokenFileFormat token_file_format_from_name(const std::string& name) {
  if (name == "shard") return TokenFileFormat::Shard;
  if (name == "raw-u16") return TokenFileFormat::RawU16;
  fail(
      "unknown token file format \"{}\"; expected \"shard\" (made by ./tokenize) or \"raw-u16\" "
      "(a bare little-endian uint16 stream, the paper's .bin files)",
      name);
}

TokenFile TokenFile::open(const std::string& path, TokenFileFormat format, int64_t vocab_size) {
  LL_CHECK(vocab_size > 0, "{}: vocabulary size must be positive, got {}", path, vocab_size);
  TokenFile tf;
  tf.file_ = MappedFile(path);
  const uint8_t* data = tf.file_.data();
  const size_t size = tf.file_.size();
  std::string made_for;  // what the file says about its own vocabulary, for the error below

  if (format == TokenFileFormat::Shard) {
    ShardHeader h = validate_shard(path, data, size);
    tf.tokens_ = data + kShardHeaderBytes;
    tf.n_tokens_ = int64_t(h.n_tokens);
    tf.bytes_per_token_ = int(h.bytes_per_token);
    made_for = fmt::format(" (the shard was made for a vocabulary of {})", h.vocab_size);
  } else {
    LL_CHECK(
        !(size >= sizeof(kShardMagic) && std::memcmp(data, kShardMagic, sizeof(kShardMagic)) == 0),
        "{}: this is a token shard (it starts with \"LLTOKSHD\"), not a raw uint16 stream; "
        "read it with format shard",
        path);
    LL_CHECK(size % 2 == 0,
             "{}: size {} bytes is odd; a raw-u16 file is a bare little-endian uint16 array, so "
             "this one is truncated or in another format",
             path, size);
    tf.tokens_ = data;
    tf.n_tokens_ = int64_t(size / 2);
    tf.bytes_per_token_ = 2;
  }

  const int64_t bad = first_out_of_vocab(tf.tokens_, tf.bytes_per_token_, tf.n_tokens_, vocab_size);
  LL_CHECK(bad == tf.n_tokens_,
           "{}: token {} has id {}, but the model's vocabulary has {} ids{}; the file was "
           "tokenized for another model: re-tokenize it with this model's tokenizer "
           "(./tokenize -m MODEL_DIR or --tokenizer MODEL_DIR/tokenizer.model) or pass the "
           "model it was made for",
           path, bad, bad < tf.n_tokens_ ? token_at(tf.tokens_, tf.bytes_per_token_, bad) : 0,
           vocab_size, made_for);
  return tf;
}

void TokenFile::read(int64_t start, int64_t count, int32_t* out) const {
  LL_CHECK(start >= 0 && count >= 0 && start <= n_tokens_ && count <= n_tokens_ - start,
           "{}: cannot read tokens [{}, {}): the file holds {} tokens", path(), start,
           start + count, n_tokens_);
  if (bytes_per_token_ == 4) {
    std::memcpy(out, tokens_ + 4 * start, size_t(count) * 4);
    return;
  }
  for (int64_t i = 0; i < count; ++i) out[i] = int32_t(token_at(tokens_, 2, start + i));
}

std::vector<int32_t> TokenFile::read(int64_t start, int64_t count) const {
  std::vector<int32_t> out(size_t(std::max<int64_t>(count, 0)));
  read(start, count, out.data());
  return out;
}

}  // namespace ll
