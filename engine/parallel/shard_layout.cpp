#include "engine/parallel/shard_layout.h"

#include <algorithm>
#include <cstddef>
#include <utility>

#include "common/error.h"

namespace ll::dist {

ShardLayout::ShardLayout(std::vector<int64_t> tensor_sizes, int world_size)
    : tensor_sizes_(std::move(tensor_sizes)), world_size_(world_size) {
  LL_CHECK(world_size_ >= 1, "shard layout: world size must be at least 1, got {}", world_size_);
  tensor_offsets_.assign(tensor_sizes_.size() + 1, 0);
  for (size_t t = 0; t < tensor_sizes_.size(); ++t) {
    LL_CHECK(tensor_sizes_[t] >= 0, "shard layout: trainable tensor {} has negative size {}", t,
             tensor_sizes_[t]);
    tensor_offsets_[t + 1] = tensor_offsets_[t] + tensor_sizes_[t];
  }
}

int64_t ShardLayout::tensor_offset(int tensor) const {
  LL_CHECK(tensor >= 0 && tensor < tensor_count(),
           "shard layout: tensor index {} is outside [0, {})", tensor, tensor_count());
  return tensor_offsets_[size_t(tensor)];
}

FlatRange ShardLayout::shard_range(int rank) const {
  LL_CHECK(rank >= 0 && rank < world_size_, "shard layout: rank {} is outside [0, {})", rank,
           world_size_);
  const int64_t base = total_size() / world_size_;
  const int64_t extra = total_size() % world_size_;  // the first `extra` ranks get one more
  const int64_t begin = rank * base + std::min<int64_t>(rank, extra);
  return {begin, begin + base + (rank < extra ? 1 : 0)};
}

std::vector<int64_t> ShardLayout::shard_sizes() const {
  std::vector<int64_t> sizes(static_cast<size_t>(world_size_));  // [world_size]
  for (int r = 0; r < world_size_; ++r) sizes[size_t(r)] = shard_size(r);
  return sizes;
}

std::vector<ShardPiece> ShardLayout::pieces(int rank) const {
  const FlatRange shard = shard_range(rank);
  std::vector<ShardPiece> result;
  if (shard.size() == 0) return result;
  // The first tensor whose end lies past the shard's begin.
  auto it = std::upper_bound(tensor_offsets_.begin() + 1, tensor_offsets_.end(), shard.begin);
  for (size_t t = size_t(it - tensor_offsets_.begin()) - 1; t < tensor_sizes_.size(); ++t) {
    const int64_t begin = std::max(shard.begin, tensor_offsets_[t]);
    const int64_t end = std::min(shard.end, tensor_offsets_[t + 1]);
    if (begin >= shard.end) break;
    if (end <= begin) continue;  // an empty tensor
    result.push_back({int(t), begin - tensor_offsets_[t], end - begin, begin - shard.begin});
  }
  return result;
}

std::vector<ReshardPiece> reshard_pieces(const ShardLayout& from, const ShardLayout& to,
                                         int new_rank) {
  LL_CHECK(from.tensor_count() == to.tensor_count(),
           "re-sharding: the checkpoint has {} trainable tensors, this run {}: it was written for "
           "another model or another choice of trainable tensors",
           from.tensor_count(), to.tensor_count());
  for (int t = 0; t < to.tensor_count(); ++t) {
    LL_CHECK(from.tensor_sizes()[size_t(t)] == to.tensor_sizes()[size_t(t)],
             "re-sharding: trainable tensor {} has {} elements in the checkpoint but {} in this "
             "run: it was written for another model or LoRA rank",
             t, from.tensor_sizes()[size_t(t)], to.tensor_sizes()[size_t(t)]);
  }
  const FlatRange target = to.shard_range(new_rank);
  std::vector<ReshardPiece> result;
  for (int old = 0; old < from.world_size() && target.size() > 0; ++old) {
    const FlatRange source = from.shard_range(old);
    const int64_t begin = std::max(source.begin, target.begin);
    const int64_t end = std::min(source.end, target.end);
    if (end <= begin) continue;
    result.push_back({old, begin - source.begin, end - begin, begin - target.begin});
  }
  return result;
}

}  // namespace ll::dist
