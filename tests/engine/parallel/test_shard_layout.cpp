// The shard layout against brute force: for small tensor lists and every world size 1..7, the
// shards partition the flat vector exactly, their sizes differ by at most one (larger first),
// the pieces rebuild each shard from the tensors element by element, and re-sharding a W1
// layout into a W2 one (and back) moves every element to where the W2 layout says it belongs.
#include <doctest/doctest.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "common/error.h"
#include "engine/parallel/shard_layout.h"

namespace {

using ll::dist::ReshardPiece;
using ll::dist::ShardLayout;
using ll::dist::ShardPiece;

// Element j of tensor t gets a value no other element has, so a misplaced copy is visible.
float element_value(int tensor, int64_t j) { return float(tensor) * 1000.0f + float(j); }

// The tensors' values concatenated in order: the flat vector, built without the layout.
std::vector<float> flat_values(const std::vector<int64_t>& sizes) {
  std::vector<float> flat;  // [total]
  for (size_t t = 0; t < sizes.size(); ++t)
    for (int64_t j = 0; j < sizes[t]; ++j) flat.push_back(element_value(int(t), j));
  return flat;
}

// Rank r's shard assembled from its pieces (NaN where no piece wrote).
std::vector<float> shard_from_pieces(const ShardLayout& layout, int rank) {
  std::vector<float> shard(size_t(layout.shard_size(rank)), std::nanf(""));  // [shard_size]
  for (const ShardPiece& p : layout.pieces(rank)) {
    REQUIRE(p.count > 0);
    REQUIRE(p.offset_in_tensor >= 0);
    REQUIRE(p.offset_in_tensor + p.count <= layout.tensor_sizes()[size_t(p.tensor)]);
    REQUIRE(p.offset_in_shard + p.count <= int64_t(shard.size()));
    for (int64_t k = 0; k < p.count; ++k) {
      float& slot = shard[size_t(p.offset_in_shard + k)];
      CHECK_MESSAGE(std::isnan(slot),
                    "shard element " << p.offset_in_shard + k << " written twice");
      slot = element_value(p.tensor, p.offset_in_tensor + k);
    }
  }
  return shard;
}

std::vector<std::vector<int64_t>> tensor_size_cases() {
  std::vector<std::vector<int64_t>> cases = {
      {}, {0}, {1}, {5}, {0, 0}, {3, 0, 7}, {1, 1, 1, 1, 1}, {13, 2, 9, 0, 4}, {6, 6}, {0, 11, 0}};
  std::mt19937_64 rng(20240607);
  for (int c = 0; c < 20; ++c) {
    std::vector<int64_t> sizes(size_t(rng() % 6 + 1));
    for (int64_t& s : sizes) s = int64_t(rng() % 4 == 0 ? 0 : rng() % 23);
    cases.push_back(sizes);
  }
  return cases;
}

std::string describe(const std::vector<int64_t>& sizes, int world) {
  std::string s = "sizes {";
  for (int64_t x : sizes) s += std::to_string(x) + ",";
  return s + "} W " + std::to_string(world);
}

}  // namespace

TEST_CASE("shards partition the flat vector, sizes differ by at most one, pieces rebuild them") {
  for (const auto& sizes : tensor_size_cases()) {
    const std::vector<float> flat = flat_values(sizes);
    for (int world = 1; world <= 7; ++world) {
      INFO(describe(sizes, world));
      const ShardLayout layout(sizes, world);
      REQUIRE(layout.total_size() == int64_t(flat.size()));
      // Contiguous and in rank order: each shard starts where the previous ended.
      int64_t next = 0;
      int64_t smallest = INT64_MAX, largest = 0;
      for (int r = 0; r < world; ++r) {
        const auto range = layout.shard_range(r);
        CHECK(range.begin == next);
        CHECK(range.end >= range.begin);
        next = range.end;
        smallest = std::min(smallest, range.size());
        largest = std::max(largest, range.size());
        // Larger shards come first: ranks < total % W hold one more.
        const int64_t expected = int64_t(flat.size()) / world + (r < int64_t(flat.size()) % world);
        CHECK(range.size() == expected);
        CHECK(layout.shard_sizes()[size_t(r)] == range.size());
        // The pieces reproduce the flat vector's slice exactly.
        const std::vector<float> shard = shard_from_pieces(layout, r);
        const std::vector<float> slice(flat.begin() + range.begin, flat.begin() + range.end);
        CHECK(shard == slice);
      }
      CHECK(next == int64_t(flat.size()));
      CHECK(largest - smallest <= 1);
      for (int t = 0; t < layout.tensor_count(); ++t) {
        int64_t offset = 0;
        for (int u = 0; u < t; ++u) offset += sizes[size_t(u)];
        CHECK(layout.tensor_offset(t) == offset);
      }
    }
  }
}

TEST_CASE("re-sharding W1 -> W2 puts every element where the W2 layout wants it, and back") {
  for (const auto& sizes : tensor_size_cases()) {
    const std::vector<float> flat = flat_values(sizes);
    for (int w1 = 1; w1 <= 7; ++w1) {
      const ShardLayout from(sizes, w1);
      // The old shards, as a checkpoint of W1 ranks would hold them.
      std::vector<std::vector<float>> old_shards;
      for (int r = 0; r < w1; ++r) old_shards.push_back(shard_from_pieces(from, r));
      for (int w2 = 1; w2 <= 7; ++w2) {
        INFO(describe(sizes, w1) << " -> W " << w2);
        const ShardLayout to(sizes, w2);
        std::vector<std::vector<float>> new_shards;
        for (int r = 0; r < w2; ++r) {
          std::vector<float> shard(size_t(to.shard_size(r)), std::nanf(""));  // [shard_size]
          for (const ReshardPiece& p : reshard_pieces(from, to, r)) {
            REQUIRE(p.count > 0);
            REQUIRE(p.old_rank >= 0);
            REQUIRE(p.old_rank < w1);
            REQUIRE(p.offset_in_old_shard + p.count <=
                    int64_t(old_shards[size_t(p.old_rank)].size()));
            REQUIRE(p.offset_in_new_shard + p.count <= int64_t(shard.size()));
            for (int64_t k = 0; k < p.count; ++k)
              shard[size_t(p.offset_in_new_shard + k)] =
                  old_shards[size_t(p.old_rank)][size_t(p.offset_in_old_shard + k)];
          }
          const auto range = to.shard_range(r);
          CHECK(shard == std::vector<float>(flat.begin() + range.begin, flat.begin() + range.end));
          new_shards.push_back(shard);
        }
        // Round trip: back to W1 from the W2 shards gives the original shards.
        for (int r = 0; r < w1; ++r) {
          std::vector<float> shard(size_t(from.shard_size(r)), std::nanf(""));  // [shard_size]
          for (const ReshardPiece& p : reshard_pieces(to, from, r))
            for (int64_t k = 0; k < p.count; ++k)
              shard[size_t(p.offset_in_new_shard + k)] =
                  new_shards[size_t(p.old_rank)][size_t(p.offset_in_old_shard + k)];
          CHECK(shard == old_shards[size_t(r)]);
        }
      }
    }
  }
}

TEST_CASE("a 7B-sized layout: shard boundaries fall inside tensors and pieces sum up") {
  // LoRA+ on Llama-2-7B: the embedding, then per layer 4 x (A [8,4096] + B [4096,8]) and two
  // norms, then the final norm: uneven shards over 3 ranks.
  std::vector<int64_t> sizes = {32000LL * 4096};
  for (int layer = 0; layer < 32; ++layer) {
    for (int proj = 0; proj < 4; ++proj) sizes.insert(sizes.end(), {8 * 4096, 4096 * 8});
    sizes.insert(sizes.end(), {4096, 4096});
  }
  sizes.push_back(4096);
  const ShardLayout layout(sizes, 3);
  int64_t total = 0;
  for (int64_t s : sizes) total += s;
  CHECK(layout.total_size() == total);
  for (int r = 0; r < 3; ++r) {
    int64_t covered = 0;
    for (const ShardPiece& p : layout.pieces(r)) {
      CHECK(p.offset_in_shard == covered);
      CHECK(layout.tensor_offset(p.tensor) + p.offset_in_tensor ==
            layout.shard_range(r).begin + covered);
      covered += p.count;
    }
    CHECK(covered == layout.shard_size(r));
  }
  CHECK(layout.shard_size(0) == total / 3 + (total % 3 > 0));
}

TEST_CASE("bad layouts and mismatched re-sharding are clear errors") {
  CHECK_THROWS_WITH_AS(ShardLayout({1, 2}, 0), "shard layout: world size must be at least 1, got 0",
                       ll::Error);
  CHECK_THROWS_WITH_AS(ShardLayout({1, -2}, 2),
                       "shard layout: trainable tensor 1 has negative size -2", ll::Error);
  const ShardLayout layout({4, 5}, 2);
  CHECK_THROWS_WITH_AS(layout.shard_range(2), "shard layout: rank 2 is outside [0, 2)", ll::Error);
  CHECK_THROWS_AS(layout.pieces(-1), ll::Error);
  CHECK_THROWS_WITH_AS(reshard_pieces(ShardLayout({4, 5, 1}, 3), layout, 0),
                       doctest::Contains("the checkpoint has 3 trainable tensors, this run 2"),
                       ll::Error);
  CHECK_THROWS_WITH_AS(
      reshard_pieces(ShardLayout({4, 6}, 3), layout, 0),
      doctest::Contains("trainable tensor 1 has 6 elements in the checkpoint but 5"), ll::Error);
  CHECK_THROWS_AS(reshard_pieces(ShardLayout({4, 5}, 3), layout, 2), ll::Error);
}
