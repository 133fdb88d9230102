// Which windows each rank reads, against brute force: for every small world size W and
// accumulation k, the ranks' reads of a step are exactly the equivalent single process's
// (accumulation W*k), each once, in contiguous per-rank blocks in rank order; the inverse maps
// back; the same holds for window numbers under shuffled epoch orders across epoch boundaries,
// and W real WindowLoaders (one seek per step, then next()) read what one loader reads.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "common/error.h"
#include "data/epoch_order.h"
#include "data/window_loader.h"
#include "engine/parallel/rank_windows.h"
#include "tests/data/scratch.h"

using ll::LoaderPosition;
using ll::dist::loader_position;
using ll::dist::RankRead;
using ll::dist::RankWindows;
using ll::dist::read_of_position;
using ll::test::error_of;

namespace {

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// The reads of step s by all ranks, rank-major (rank 0's micro-batches first).
std::vector<int64_t> ranks_reads(const RankWindows& windows, int64_t step) {
  std::vector<int64_t> reads;  // [W*k]
  for (int r = 0; r < windows.world_size(); ++r)
    for (int64_t j = 0; j < windows.grad_accum(); ++j)
      reads.push_back(windows.read_index(step, r, j));
  return reads;
}

}  // namespace

TEST_CASE("every step's reads over ranks are the single process's, disjoint, in rank blocks") {
  for (int world = 1; world <= 5; ++world) {
    for (int64_t accum = 1; accum <= 4; ++accum) {
      const RankWindows windows(world, accum);
      CAPTURE(world);
      CAPTURE(accum);
      REQUIRE(windows.reads_per_step() == world * accum);
      std::vector<int64_t>
          all_reads;  // every read of the first 5 steps, in (step, rank, micro) order
      for (int64_t step = 0; step < 5; ++step) {
        CAPTURE(step);
        const std::vector<int64_t> reads = ranks_reads(windows, step);
        // The single process with accumulation W*k, written out without the class.
        std::vector<int64_t> single;  // [W*k]
        for (int64_t m = 0; m < world * accum; ++m) single.push_back(step * world * accum + m);
        std::vector<int64_t> sorted = reads;
        std::sort(sorted.begin(), sorted.end());
        CHECK(sorted == single);  // the same set, and disjoint (no duplicates in a sorted copy)
        CHECK(std::adjacent_find(sorted.begin(), sorted.end()) == sorted.end());
        // Contiguous blocks in rank order: rank r's micro j is single-process micro r*k + j.
        CHECK(reads == single);
        for (int r = 0; r < world; ++r) {
          CHECK(windows.first_read(step, r) == step * world * accum + r * accum);
          for (int64_t j = 0; j < accum; ++j) {
            CHECK(windows.read_index(step, r, j) ==
                  windows.single_process_read_index(step, r * accum + j));
            CHECK(windows.rank_read(windows.read_index(step, r, j)) == RankRead{step, r, j});
          }
        }
        CHECK(windows.reads_before_step(step) == step * world * accum);
        all_reads.insert(all_reads.end(), reads.begin(), reads.end());
      }
      // Over steps, the reads cover [0, 5*W*k) exactly once, in order.
      for (size_t i = 0; i < all_reads.size(); ++i) CHECK(all_reads[i] == int64_t(i));
    }
  }
}

TEST_CASE("under shuffled epoch orders the ranks read the single process's windows") {
  const uint64_t seed = 1234;
  for (int64_t per_epoch : {1, 3, 7, 10}) {
    // window_at as the loader computes it: the epoch's permutation at the index.
    auto window_at = [&](const LoaderPosition& p) {
      return ll::shuffled_epoch_order(per_epoch, seed, p.epoch)[size_t(p.index)];
    };
    for (int world = 1; world <= 4; ++world) {
      for (int64_t accum = 1; accum <= 3; ++accum) {
        const RankWindows windows(world, accum);
        CAPTURE(per_epoch);
        CAPTURE(world);
        CAPTURE(accum);
        // Enough steps to cross several epoch boundaries (mid-step for most sizes).
        const int64_t steps = 3 * per_epoch / (world * accum) + 3;
        for (int64_t step = 0; step < steps; ++step) {
          std::vector<int64_t> ranks;   // [W*k] window numbers, rank-major
          std::vector<int64_t> single;  // [W*k]
          for (int r = 0; r < world; ++r)
            for (int64_t j = 0; j < accum; ++j)
              ranks.push_back(windows.window(step, r, j, per_epoch, window_at));
          // The single process's micro-batch m reads entry (s*W*k + m) of the epoch stream.
          for (int64_t m = 0; m < world * accum; ++m) {
            const int64_t read = step * world * accum + m;
            single.push_back(ll::shuffled_epoch_order(per_epoch, seed,
                                                      read / per_epoch)[size_t(read % per_epoch)]);
          }
          CHECK(ranks == single);
        }
      }
    }
  }
}

TEST_CASE("loader positions map to reads and back") {
  for (int64_t per_epoch : {1, 4, 9}) {
    for (int64_t read = 0; read < 40; ++read) {
      const LoaderPosition p = loader_position(read, per_epoch);
      CHECK(p.epoch == read / per_epoch);
      CHECK(p.index == read % per_epoch);
      CHECK(read_of_position(p, per_epoch) == read);
    }
  }
}

TEST_CASE("W loaders that seek once per step read what one loader with accumulation W*k reads") {
  // A raw-u16 file of 7 windows of 4 tokens (and a 2-token tail that is never read); token t
  // has id t, so each window's first id names it.
  const ll::test::ScratchDir dir("rank_windows");
  const int64_t window_tokens = 4;
  std::string bytes;
  for (int t = 0; t < 7 * 4 + 2; ++t) bytes += {char(t & 0xff), char(t >> 8)};
  ll::test::write_file(dir.file("tokens.u16"), bytes);
  const std::vector<std::string> paths = {dir.file("tokens.u16")};

  for (bool shuffle : {false, true}) {
    for (int world : {2, 3}) {
      const int64_t accum = 2;
      const RankWindows windows(world, accum);
      CAPTURE(shuffle);
      CAPTURE(world);
      ll::WindowLoader single(paths, ll::TokenFileFormat::RawU16, 1000, window_tokens, shuffle, 7);
      std::vector<ll::WindowLoader> ranks;
      for (int r = 0; r < world; ++r)
        ranks.emplace_back(paths, ll::TokenFileFormat::RawU16, 1000, window_tokens, shuffle, 7);
      for (int64_t step = 0; step < 6; ++step) {  // 24-36 reads: several epochs of 7
        std::vector<std::vector<int32_t>> from_single, from_ranks;
        for (int64_t m = 0; m < world * accum; ++m) from_single.push_back(single.next());
        for (int r = 0; r < world; ++r) {
          ll::WindowLoader& loader = ranks[size_t(r)];
          loader.seek(loader_position(windows.first_read(step, r), loader.windows_per_epoch()));
          for (int64_t j = 0; j < accum; ++j) {
            CHECK(loader.window_at(loader.position()) ==
                  windows.window(step, r, j, loader.windows_per_epoch(),
                                 [&](const LoaderPosition& p) { return loader.window_at(p); }));
            from_ranks.push_back(loader.next());
          }
        }
        CHECK(from_ranks == from_single);
        // The shared position after the step, as a checkpoint would record it.
        CHECK(single.position() ==
              loader_position(windows.reads_before_step(step + 1), single.windows_per_epoch()));
      }
    }
  }
}

TEST_CASE("bad world sizes, ranks, micro-batches and positions are refused with a message") {
  CHECK(contains(error_of([] { RankWindows(0, 1); }), "the world size must be at least 1, got 0"));
  CHECK(contains(error_of([] { RankWindows(2, 0); }),
                 "gradient accumulation must be at least 1, got 0"));
  const RankWindows windows(3, 2);
  CHECK(contains(error_of([&] { windows.read_index(0, 3, 0); }), "rank 3 is outside [0, 3)"));
  CHECK(contains(error_of([&] { windows.read_index(0, -1, 0); }), "rank -1 is outside [0, 3)"));
  CHECK(
      contains(error_of([&] { windows.read_index(0, 0, 2); }), "micro-batch 2 is outside [0, 2)"));
  CHECK(contains(error_of([&] { windows.read_index(-1, 0, 0); }), "step -1 is negative"));
  CHECK(contains(error_of([&] { windows.single_process_read_index(0, 6); }),
                 "micro-batch 6 of the single process is outside [0, 6)"));
  CHECK(contains(error_of([&] { windows.rank_read(-2); }), "read index -2 is negative"));
  CHECK(contains(error_of([] { loader_position(3, 0); }),
                 "an epoch must hold at least one window, got 0"));
  CHECK(contains(error_of([] {
                   read_of_position({1, 5}, 5);
                 }),
                 "loader position (epoch 1, window 5) is outside an epoch of 5 windows"));
}
