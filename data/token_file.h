#pragma once
// Token streams on disk, read through one interface:
//  - Shard ("shard"): our format, see data/shard_format.h (versioned header, u16 or u32 ids).
//  - RawU16 ("raw-u16"): the LongLoRA paper's evaluation files, a bare little-endian uint16
//    array (pg19/validation.bin, proof-pile/test_sampled_data.bin).
#include <cstdint>
#include <string>
#include <vector>

#include "common/mapped_file.h"

namespace ll {

enum class TokenFileFormat { Shard, RawU16 };

// "shard" or "raw-u16"; throws ll::Error naming the accepted values otherwise.
TokenFileFormat token_file_format_from_name(const std::string& name);

class TokenFile {
 public:
  // Maps the file, validates its structure and checks every id is < vocab_size
  // (the error names the file, the offending position and id, and the vocabulary size).
  static TokenFile open(const std::string& path, TokenFileFormat format, int64_t vocab_size);

  int64_t size() const { return n_tokens_; }
  const std::string& path() const { return file_.path(); }
  // Copy tokens [start, start + count) as int32; throws when the range is out of bounds.
  void read(int64_t start, int64_t count, int32_t* out) const;
  std::vector<int32_t> read(int64_t start, int64_t count) const;

 private:
  MappedFile file_;
  const uint8_t* tokens_ = nullptr;
  int64_t n_tokens_ = 0;
  int bytes_per_token_ = 2;
};

}  // namespace ll
