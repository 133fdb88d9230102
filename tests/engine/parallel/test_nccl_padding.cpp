// The padded layout NCCL's equal-count collectives use (engine/parallel/nccl_padding.h), against
// brute force: for ShardLayout's uneven shards over many totals and world sizes 1..9, the block
// size is ceil(T / W), every flat element lands in its rank's block at the offset the shard gives
// it, pad_flat / unpad round-trip, padding positions hold the fill value and nothing else does, and
// bad input (no ranks, negative sizes, wrong buffer sizes, indices out of range) is refused.
#include <doctest/doctest.h>

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "common/error.h"
#include "engine/parallel/nccl_padding.h"
#include "engine/parallel/shard_layout.h"

using ll::dist::NcclPadding;
using ll::dist::ShardLayout;

TEST_CASE("NCCL padding of ShardLayout's shards, against brute force") {
  for (int64_t total : {0, 1, 2, 7, 8, 9, 63, 64, 65, 1000, 1001, 4099}) {
    for (int world = 1; world <= 9; ++world) {
      INFO("T " << total << " W " << world);
      const ShardLayout layout({total}, world);
      const std::vector<int64_t> sizes = layout.shard_sizes();
      const NcclPadding padding(sizes);
      const int64_t block = (total + world - 1) / world;  // ceil: the largest shard
      CHECK(padding.world_size() == world);
      CHECK(padding.block_size() == block);
      CHECK(padding.flat_size() == total);
      CHECK(padding.padded_size() == block * world);
      CHECK(padding.is_flat() == (total % world == 0));

      // Brute force: walk the flat vector rank by rank, element by element.
      std::vector<int64_t> want_index;  // [T], padded index of each flat element
      std::vector<bool> is_data(size_t(block * world), false);  // [W * B]
      for (int r = 0; r < world; ++r) {
        CHECK(padding.flat_offset(r) == layout.shard_range(r).begin);
        CHECK(padding.padded_offset(r) == int64_t(r) * block);
        CHECK(padding.shard_size(r) == layout.shard_size(r));
        for (int64_t k = 0; k < layout.shard_size(r); ++k) {
          want_index.push_back(int64_t(r) * block + k);
          is_data[size_t(int64_t(r) * block + k)] = true;
        }
      }
      REQUIRE(int64_t(want_index.size()) == total);
      int64_t wrong_index = 0;
      for (int64_t i = 0; i < total; ++i)
        wrong_index += padding.padded_index(i) != want_index[size_t(i)];
      CHECK(wrong_index == 0);

      std::vector<float> flat(static_cast<size_t>(total));  // [T], distinct values
      for (int64_t i = 0; i < total; ++i) flat[size_t(i)] = float(i) + 0.5f;
      const std::vector<float> padded = ll::dist::pad_flat<float>(flat, padding, -7.0f);
      REQUIRE(int64_t(padded.size()) == padding.padded_size());
      int64_t misplaced = 0;
      for (int64_t i = 0; i < total; ++i)
        misplaced += padded[size_t(want_index[size_t(i)])] != flat[size_t(i)];
      int64_t bad_padding = 0;
      for (size_t j = 0; j < padded.size(); ++j) bad_padding += !is_data[j] && padded[j] != -7.0f;
      CHECK(misplaced == 0);
      CHECK(bad_padding == 0);
      CHECK(ll::dist::unpad<float>(padded, padding) == flat);
    }
  }
}

TEST_CASE("NCCL padding of arbitrary shard sizes (empty shards, one large shard)") {
  const std::vector<int64_t> sizes = {3, 0, 5, 1};
  const NcclPadding padding(sizes);
  CHECK(padding.block_size() == 5);
  CHECK(padding.padded_size() == 20);
  CHECK(padding.flat_size() == 9);
  CHECK(!padding.is_flat());
  // flat 0..2 -> rank 0 at 0..2; rank 1 empty; flat 3..7 -> rank 2 at 10..14; flat 8 -> 15.
  const std::vector<int64_t> want = {0, 1, 2, 10, 11, 12, 13, 14, 15};
  for (int64_t i = 0; i < 9; ++i) CHECK(padding.padded_index(i) == want[size_t(i)]);
  const std::vector<int> flat = {1, 2, 3, 4, 5, 6, 7, 8, 9};
  const std::vector<int> padded = ll::dist::pad_flat<int>(flat, padding, 0);
  CHECK(padded == std::vector<int>{1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 4, 5, 6, 7, 8, 9, 0, 0, 0, 0});
  CHECK(ll::dist::unpad<int>(padded, padding) == flat);

  const std::vector<int64_t> all_empty = {0, 0};
  const NcclPadding empty(all_empty);
  CHECK(empty.block_size() == 0);
  CHECK(empty.padded_size() == 0);
  CHECK(empty.is_flat());
}

TEST_CASE("NCCL padding refuses bad input with a clear message") {
  auto message_of = [](auto&& f) {
    try {
      f();
    } catch (const ll::Error& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  const std::vector<int64_t> none;
  CHECK(message_of([&] { NcclPadding p(none); }).find("no shard sizes") != std::string::npos);
  const std::vector<int64_t> negative = {4, -1};
  CHECK(message_of([&] { NcclPadding p(negative); }).find("shard 1 has negative size -1") !=
        std::string::npos);
  const std::vector<int64_t> sizes = {2, 1};
  const NcclPadding padding(sizes);
  CHECK(message_of([&] { (void)padding.padded_index(3); }).find("flat index 3 outside [0, 3)") !=
        std::string::npos);
  CHECK(message_of([&] { (void)padding.padded_offset(2); }).find("rank 2 outside a world of 2") !=
        std::string::npos);
  const std::vector<float> wrong_flat(4);
  CHECK(message_of([&] {
          (void)ll::dist::pad_flat<float>(wrong_flat, padding, 0.0f);
        }).find("flat buffer has 4 elements, the shards 3") != std::string::npos);
  const std::vector<float> wrong_padded(3);
  CHECK(message_of([&] {
          (void)ll::dist::unpad<float>(wrong_padded, padding);
        }).find("padded buffer has 3 elements, expected 4") != std::string::npos);
}
