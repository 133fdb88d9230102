#include "data/shard_format.h"

#include <bit>
#include <cstring>
#include <limits>

#include "common/atomic_file.h"
#include "common/error.h"

namespace ll {

// Ids and header fields are stored as the host's integers; every target we build for is
// little-endian, which is what the format says.
static_assert(std::endian::native == std::endian::little,
              "token shards assume a little-endian host");

namespace {

constexpr size_t kVersionOffset = 8;
constexpr size_t kBytesPerTokenOffset = 12;
constexpr size_t kCountOffset = 16;
constexpr size_t kVocabOffset = 24;
constexpr size_t kChecksumOffset = 32;

template <typename T>
T load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

template <typename T>
void store(uint8_t* p, T v) {
  std::memcpy(p, &v, sizeof(T));
}

}  // namespace

uint64_t fnv1a64(const void* data, size_t bytes, uint64_t hash) {
  const auto* p = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i < bytes; ++i) {
    hash ^= p[i];
    hash *= 0x100000001b3ull;
  }
  return hash;
}

void encode_shard_header(const ShardHeader& header, uint8_t out[kShardHeaderBytes]) {
  std::memset(out, 0, kShardHeaderBytes);
  std::memcpy(out, kShardMagic, sizeof(kShardMagic));
  store<uint32_t>(out + kVersionOffset, header.version);
  store<uint32_t>(out + kBytesPerTokenOffset, header.bytes_per_token);
  store<uint64_t>(out + kCountOffset, header.n_tokens);
  store<uint64_t>(out + kVocabOffset, header.vocab_size);
  store<uint64_t>(out + kChecksumOffset, header.checksum);
}

ShardHeader validate_shard(const std::string& path, const uint8_t* data, size_t size) {
  LL_CHECK(size >= sizeof(kShardMagic) && std::memcmp(data, kShardMagic, sizeof(kShardMagic)) == 0,
           "{}: not a token shard (the file does not start with \"LLTOKSHD\"); a bare uint16 "
           "token stream such as the paper's .bin files is read with format raw-u16, text is "
           "turned into a shard with ./tokenize",
           path);
  LL_CHECK(size >= kShardHeaderBytes,
           "{}: truncated shard header ({} bytes, a header has {}); the file was cut short, "
           "re-create it with ./tokenize",
           path, size, kShardHeaderBytes);
  ShardHeader h;
  h.version = load<uint32_t>(data + kVersionOffset);
  h.bytes_per_token = load<uint32_t>(data + kBytesPerTokenOffset);
  h.n_tokens = load<uint64_t>(data + kCountOffset);
  h.vocab_size = load<uint64_t>(data + kVocabOffset);
  h.checksum = load<uint64_t>(data + kChecksumOffset);

  LL_CHECK(h.version == kShardVersion,
           "{}: shard version {} is not supported (supported versions: {}); re-create the shard "
           "with this build's ./tokenize",
           path, h.version, kShardVersion);
  LL_CHECK(h.bytes_per_token == 2 || h.bytes_per_token == 4,
           "{}: header says {} bytes per token at offset {}, expected 2 or 4; the header is "
           "damaged, re-create the shard with ./tokenize",
           path, h.bytes_per_token, kBytesPerTokenOffset);
  LL_CHECK(h.vocab_size > 0 && (h.bytes_per_token == 4 || h.vocab_size <= 65536),
           "{}: header says vocabulary size {} with {} bytes per token; the header is damaged, "
           "re-create the shard with ./tokenize",
           path, h.vocab_size, h.bytes_per_token);

  // Compare sizes without overflow: a damaged count can be anything.
  const uint64_t payload = size - kShardHeaderBytes;
  const uint64_t max_tokens = std::numeric_limits<uint64_t>::max() / h.bytes_per_token;
  LL_CHECK(h.n_tokens <= max_tokens && h.n_tokens * h.bytes_per_token <= payload,
           "{}: truncated: the header announces {} tokens ({} bytes each) but the file holds "
           "only {} bytes of tokens; the file was cut short (an interrupted copy?), copy or "
           "re-create it",
           path, h.n_tokens, h.bytes_per_token, payload);
  const uint64_t expected = h.n_tokens * h.bytes_per_token;
  LL_CHECK(payload == expected,
           "{}: {} trailing bytes after the {} tokens the header announces (file is {} bytes, "
           "expected {}); the file is damaged or was appended to, re-create it with ./tokenize",
           path, payload - expected, h.n_tokens, size, kShardHeaderBytes + expected);

  const uint64_t actual = fnv1a64(data + kShardHeaderBytes, payload);
  LL_CHECK(actual == h.checksum,
           "{}: checksum mismatch (header {:#018x}, tokens {:#018x}); the token data is "
           "damaged, copy or re-create the file",
           path, h.checksum, actual);
  return h;
}

int shard_bytes_per_token_for_vocab(int64_t vocab_size) { return vocab_size <= 65536 ? 2 : 4; }

ShardWriter::ShardWriter(std::string path, int64_t vocab_size, int bytes_per_token)
    : path_(std::move(path)), vocab_size_(vocab_size), bytes_per_token_(bytes_per_token) {
  LL_CHECK(vocab_size > 0 && vocab_size <= (int64_t(1) << 32),
           "{}: vocabulary size {} is out of range (1 .. 2^32)", path_, vocab_size);
  if (bytes_per_token_ == 0) bytes_per_token_ = shard_bytes_per_token_for_vocab(vocab_size);
  LL_CHECK(bytes_per_token_ == 2 || bytes_per_token_ == 4,
           "{}: bytes per token must be 2 (u16) or 4 (u32), got {}", path_, bytes_per_token_);
  LL_CHECK(bytes_per_token_ == 4 || vocab_size <= 65536,
           "{}: a vocabulary of {} ids does not fit in u16 tokens; use --dtype u32", path_,
           vocab_size);
}

void ShardWriter::append(const int32_t* ids, size_t n) {
  LL_CHECK(!committed_, "{}: append after commit", path_);
  const int64_t first = n_tokens_;
  for (size_t i = 0; i < n; ++i) {
    LL_CHECK(ids[i] >= 0 && ids[i] < vocab_size_,
             "{}: token {} has id {}, outside the vocabulary of {} ids; the tokenizer and the "
             "vocabulary size do not match",
             path_, first + int64_t(i), ids[i], vocab_size_);
  }
  const size_t old_size = payload_.size();
  payload_.resize(old_size + n * size_t(bytes_per_token_));
  uint8_t* dst = payload_.data() + old_size;
  if (bytes_per_token_ == 4) {
    std::memcpy(dst, ids, n * 4);
  } else {
    for (size_t i = 0; i < n; ++i) store<uint16_t>(dst + 2 * i, uint16_t(ids[i]));
  }
  n_tokens_ += int64_t(n);
}

void ShardWriter::commit() {
  LL_CHECK(!committed_, "{}: committed twice", path_);
  ShardHeader h;
  h.bytes_per_token = uint32_t(bytes_per_token_);
  h.n_tokens = uint64_t(n_tokens_);
  h.vocab_size = uint64_t(vocab_size_);
  h.checksum = fnv1a64(payload_.data(), payload_.size());
  uint8_t header[kShardHeaderBytes];
  encode_shard_header(h, header);

  AtomicFileWriter file(path_);
  file.write(header, sizeof(header));
  file.write(payload_.data(), payload_.size());
  file.commit();
  committed_ = true;
  payload_.clear();
  payload_.shrink_to_fit();
}

}  // namespace ll
