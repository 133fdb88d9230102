#pragma once
// How the trainable parameters are split across data-parallel ranks (ZeRO-1/2 style).
//
// The trainable tensors, in a fixed order (every rank must use the same order), are seen as one
// flat fp32 vector: tensor 0's elements, then tensor 1's, ... Rank r of a world of W owns the
// contiguous slice ("shard") r of that vector: gradients are reduce-scattered into it, the rank
// keeps the fp32 master weights and AdamW moments of that slice only, and the updated slices are
// all-gathered back. Shards are as equal as possible: with T elements in all, ranks
// r < T % W hold floor(T / W) + 1 elements and the others floor(T / W) (so sizes differ by at
// most one, and a rank's shard may be empty when T < W). Shards cut through tensors: a shard is
// described by its pieces (which part of which tensor lands where in the shard).
//
// A checkpoint written by W1 ranks holds W1 optimizer shards; resuming with W2 ranks re-shards:
// reshard_pieces says which parts of which old shards form a new rank's shard.
#include <cstdint>
#include <vector>

namespace ll::dist {

// A half-open range [begin, end) of the flat vector.
struct FlatRange {
  int64_t begin = 0;
  int64_t end = 0;
  int64_t size() const { return end - begin; }
  bool operator==(const FlatRange&) const = default;
};

// `count` elements of tensor `tensor`, starting at `offset_in_tensor`, stored in the shard at
// `offset_in_shard`.
struct ShardPiece {
  int tensor = 0;
  int64_t offset_in_tensor = 0;
  int64_t count = 0;
  int64_t offset_in_shard = 0;
  bool operator==(const ShardPiece&) const = default;
};

class ShardLayout {
 public:
  // tensor_sizes: element count of each trainable tensor, in the fixed order (zeros allowed);
  // world_size >= 1. Throws ll::Error on a negative size or world size < 1.
  ShardLayout(std::vector<int64_t> tensor_sizes, int world_size);

  int world_size() const { return world_size_; }
  int tensor_count() const { return int(tensor_sizes_.size()); }
  int64_t total_size() const { return tensor_offsets_.back(); }
  const std::vector<int64_t>& tensor_sizes() const { return tensor_sizes_; }
  // Where tensor t starts in the flat vector.
  int64_t tensor_offset(int tensor) const;

  // The flat range rank r owns; throws ll::Error when r is outside [0, world_size).
  FlatRange shard_range(int rank) const;
  int64_t shard_size(int rank) const { return shard_range(rank).size(); }
  // Every rank's shard size, rank order: the counts the reduce-scatter and all-gather take.
  std::vector<int64_t> shard_sizes() const;
  // The parts of tensors that make up rank r's shard, in flat order; empty tensors and empty
  // shards give no pieces. Their counts add up to shard_size(rank).
  std::vector<ShardPiece> pieces(int rank) const;

 private:
  std::vector<int64_t> tensor_sizes_;    // [tensor_count]
  std::vector<int64_t> tensor_offsets_;  // [tensor_count + 1], prefix sums; back() = total
  int world_size_ = 1;
};

// `count` elements of old rank `old_rank`'s shard, starting at `offset_in_old_shard`, land in
// the new rank's shard at `offset_in_new_shard`.
struct ReshardPiece {
  int old_rank = 0;
  int64_t offset_in_old_shard = 0;
  int64_t count = 0;
  int64_t offset_in_new_shard = 0;
  bool operator==(const ReshardPiece&) const = default;
};

// Which parts of the shards of `from` (the checkpoint's layout) make up rank `new_rank`'s shard
// of `to` (this run's layout), in order; their counts add up to to.shard_size(new_rank). Both
// layouts must describe the same tensors (throws ll::Error naming the first difference:
// a checkpoint of another model or another set of trainable tensors).
std::vector<ReshardPiece> reshard_pieces(const ShardLayout& from, const ShardLayout& to,
                                         int new_rank);

}  // namespace ll::dist
