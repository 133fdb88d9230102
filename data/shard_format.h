#pragma once
// Our token shard: a 64-byte header, then the token ids little-endian.
//
//   offset size  field
//        0    8  magic "LLTOKSHD"
//        8    4  uint32 version (1)
//       12    4  uint32 bytes per token (2: uint16 ids, 4: uint32 ids)
//       16    8  uint64 token count
//       24    8  uint64 vocabulary size the shard was made for (every id is below it)
//       32    8  uint64 FNV-1a 64 checksum of the token bytes (everything after the header)
//       40   24  reserved, zero
//       64    -  token ids, count * bytes per token, nothing after them
//
// All integers are little-endian. The writer picks uint16 ids when the vocabulary fits
// (<= 65536, Llama-2's 32000 does) so shards are half the size of uint32 ones.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace ll {

inline constexpr char kShardMagic[8] = {'L', 'L', 'T', 'O', 'K', 'S', 'H', 'D'};
inline constexpr uint32_t kShardVersion = 1;
inline constexpr size_t kShardHeaderBytes = 64;

struct ShardHeader {
  uint32_t version = kShardVersion;
  uint32_t bytes_per_token = 2;
  uint64_t n_tokens = 0;
  uint64_t vocab_size = 0;
  uint64_t checksum = 0;
};

// FNV-1a 64 over bytes, continuing from `hash` (start with kFnv1aOffset).
inline constexpr uint64_t kFnv1aOffset = 0xcbf29ce484222325ull;
uint64_t fnv1a64(const void* data, size_t bytes, uint64_t hash = kFnv1aOffset);

// The header's 64 bytes (reserved bytes zero).
void encode_shard_header(const ShardHeader& header, uint8_t out[kShardHeaderBytes]);

// Checks a whole shard image (magic, version, token size, exact file size, checksum) and
// returns its header. Errors name `path` and say what is wrong and what to do.
ShardHeader validate_shard(const std::string& path, const uint8_t* data, size_t size);

// Bytes per token for a vocabulary: 2 when every id fits in uint16, else 4.
int shard_bytes_per_token_for_vocab(int64_t vocab_size);

// Writes a shard atomically (temporary name, fsync, rename at commit()). Ids are range-checked
// against vocab_size as they are appended. The header needs the count and checksum of all
// tokens, so the ids are held in memory (at the shard's width) until commit(); split large
// corpora into several shards (tokenize --shard-tokens).
class ShardWriter {
 public:
  // bytes_per_token 0 picks shard_bytes_per_token_for_vocab(vocab_size); 2 or 4 forces it
  // (2 with a vocabulary above 65536 is an error).
  ShardWriter(std::string path, int64_t vocab_size, int bytes_per_token = 0);

  void append(const int32_t* ids, size_t n);
  void append(const std::vector<int>& ids) { append(ids.data(), ids.size()); }
  int64_t n_tokens() const { return n_tokens_; }  // appended so far (kept after commit)
  int bytes_per_token() const { return bytes_per_token_; }
  const std::string& path() const { return path_; }
  // Writes header + ids and renames into place. Without it the destructor leaves nothing.
  void commit();

 private:
  std::string path_;
  int64_t vocab_size_;
  int bytes_per_token_;
  int64_t n_tokens_ = 0;
  std::vector<uint8_t> payload_;  // [n_tokens * bytes_per_token] little-endian ids
  bool committed_ = false;
};

}  // namespace ll
