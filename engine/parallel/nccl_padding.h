#pragma once
// The padded layout NCCL's reduce-scatter and all-gather need for our uneven shards.
//
// ncclReduceScatter and ncclAllGather move the same count to every rank, while ShardLayout's
// shards (engine/parallel/shard_layout.h) differ by up to one element. The NCCL communicator
// therefore works on a padded flat buffer of W blocks of B = max shard size elements:
//
//   padded [W * B]:  | shard 0 | pad | shard 1 | pad | ... | shard W-1 | pad |
//                     ^ 0            ^ B                    ^ (W-1) * B
//
// rank r's shard occupies [r * B, r * B + size_r) and its block ends in B - size_r padding
// elements (0 or 1 with ShardLayout). A per-rank shard buffer is one block, [B]: its first size_r
// elements are the shard, the rest padding. Padding is carried through the collectives and
// means nothing (zero it in reduce-scatter inputs so that no NaN is ever summed). When every
// shard has the same size (T divisible by W, or a world of one) the padded layout is the flat
// layout itself and no copy is needed (is_flat()).
//
// Host only: no CUDA or NCCL here, so the arithmetic is tested on the CPU.
#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

#include "common/error.h"

namespace ll::dist {

class NcclPadding {
 public:
  // shard_sizes: [W] (every rank's shard size, rank order, as ShardLayout::shard_sizes()).
  // Throws ll::Error on an empty list or a negative size.
  explicit NcclPadding(std::span<const int64_t> shard_sizes)
      : shard_sizes_(shard_sizes.begin(), shard_sizes.end()) {
    LL_CHECK(!shard_sizes_.empty(), "NCCL padding: no shard sizes given (a world of 0 ranks)");
    flat_offsets_.reserve(shard_sizes_.size() + 1);
    flat_offsets_.push_back(0);
    for (size_t r = 0; r < shard_sizes_.size(); ++r) {
      LL_CHECK(shard_sizes_[r] >= 0, "NCCL padding: shard {} has negative size {}", r,
               shard_sizes_[r]);
      block_ = std::max(block_, shard_sizes_[r]);
      flat_offsets_.push_back(flat_offsets_.back() + shard_sizes_[r]);
    }
  }

  int world_size() const { return int(shard_sizes_.size()); }
  const std::vector<int64_t>& shard_sizes() const { return shard_sizes_; }
  // B: the elements every rank sends or receives, and the size of a padded shard buffer.
  int64_t block_size() const { return block_; }
  // T: the unpadded flat size.
  int64_t flat_size() const { return flat_offsets_.back(); }
  // W * B: the size of the padded flat buffer.
  int64_t padded_size() const { return block_ * world_size(); }
  int64_t shard_size(int rank) const { return shard_sizes_[checked(rank)]; }
  // Where rank r's shard starts in the flat [T] and in the padded [W * B] buffer.
  int64_t flat_offset(int rank) const { return flat_offsets_[checked(rank)]; }
  int64_t padded_offset(int rank) const { return int64_t(checked(rank)) * block_; }
  // True when the flat buffer already is the padded buffer (all shards of size B).
  bool is_flat() const { return padded_size() == flat_size(); }

  // Flat index -> padded index (i in [0, T)).
  int64_t padded_index(int64_t flat_index) const {
    LL_CHECK(flat_index >= 0 && flat_index < flat_size(),
             "NCCL padding: flat index {} outside [0, {})", flat_index, flat_size());
    const auto it = std::upper_bound(flat_offsets_.begin(), flat_offsets_.end(), flat_index);
    const int rank = int(it - flat_offsets_.begin()) - 1;
    return padded_offset(rank) + (flat_index - flat_offsets_[size_t(rank)]);
  }

 private:
  size_t checked(int rank) const {
    LL_CHECK(rank >= 0 && rank < world_size(), "NCCL padding: rank {} outside a world of {}", rank,
             world_size());
    return size_t(rank);
  }

  std::vector<int64_t> shard_sizes_;   // [W]
  std::vector<int64_t> flat_offsets_;  // [W + 1], prefix sums of shard_sizes_
  int64_t block_ = 0;                  // B = max shard size
};

// Host reference of the packing the communicator does on the device: flat [T] -> padded
// [W * B], padding set to `fill`.
template <typename T>
std::vector<T> pad_flat(std::span<const T> flat, const NcclPadding& padding, T fill) {
  LL_CHECK(int64_t(flat.size()) == padding.flat_size(),
           "NCCL padding: flat buffer has {} elements, the shards {}", flat.size(),
           padding.flat_size());
  std::vector<T> padded(size_t(padding.padded_size()), fill);  // [W * B]
  for (int r = 0; r < padding.world_size(); ++r) {
    std::copy_n(flat.begin() + padding.flat_offset(r), padding.shard_size(r),
                padded.begin() + padding.padded_offset(r));
  }
  return padded;
}

// padded [W * B] -> flat [T], dropping the padding.
template <typename T>
std::vector<T> unpad(std::span<const T> padded, const NcclPadding& padding) {
  LL_CHECK(int64_t(padded.size()) == padding.padded_size(),
           "NCCL padding: padded buffer has {} elements, expected {}", padded.size(),
           padding.padded_size());
  std::vector<T> flat(size_t(padding.flat_size()));  // [T]
  for (int r = 0; r < padding.world_size(); ++r) {
    std::copy_n(padded.begin() + padding.padded_offset(r), padding.shard_size(r),
                flat.begin() + padding.flat_offset(r));
  }
  return flat;
}

}  // namespace ll::dist
