// SftLoader: file order and the seeded per-epoch permutation (the window loader's, recomputed
// here), epoch rollover, resume by seek(), and bad positions.
#include <doctest/doctest.h>

#include <algorithm>
#include <numeric>
#include <set>
#include <vector>

#include "common/random.h"
#include "data/epoch_order.h"
#include "data/sft_loader.h"
#include "tests/data/scratch.h"

using ll::LoaderPosition;
using ll::SftLoader;
using ll::test::contains;
using ll::test::error_of;

namespace {

// n examples; example i is record 10 + i with i + 2 tokens, so each one is recognisable.
ll::SftDataset dataset(int64_t n) {
  std::vector<ll::SftExample> all;
  for (int64_t i = 0; i < n; ++i) {
    ll::SftExample ex;
    ex.record = 10 + i;
    ex.tokens.assign(size_t(i + 2), int32_t(i));
    ex.source_len = 1;
    all.push_back(ex);
  }
  return ll::collect_sft_examples(all, 1000, "d.json");
}

// The documented order, written out: Fisher-Yates from the top, j = below(i + 1) of
// SplitMix64 seeded with derive_seed(seed, epoch).
std::vector<int64_t> expected_order(int64_t n, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), int64_t(0));
  ll::SplitMix64 rng{ll::derive_seed(seed, uint64_t(epoch))};
  for (int64_t i = n - 1; i >= 1; --i)
    std::swap(order[size_t(i)], order[size_t(rng.below(uint64_t(i) + 1))]);
  return order;
}

// The records of the next k examples.
std::vector<int64_t> take(SftLoader& loader, int64_t k) {
  std::vector<int64_t> out;
  for (int64_t i = 0; i < k; ++i) out.push_back(loader.next().record);
  return out;
}

}  // namespace

TEST_CASE("no shuffle: file order, then the next epoch") {
  SftLoader loader(dataset(3), false, 42);
  CHECK(loader.examples_per_epoch() == 3);
  CHECK(take(loader, 7) == std::vector<int64_t>{10, 11, 12, 10, 11, 12, 10});
  CHECK(loader.position() == LoaderPosition{2, 1});
}

TEST_CASE("shuffle: each epoch a permutation fixed by (seed, epoch)") {
  const int64_t n = 13;
  for (uint64_t seed : {uint64_t(0), uint64_t(7), uint64_t(123456789)}) {
    CAPTURE(seed);
    SftLoader loader(dataset(n), true, seed);
    std::vector<std::vector<int64_t>> epochs;
    for (int64_t e = 0; e < 3; ++e) {
      const std::vector<int64_t> order = expected_order(n, seed, e);
      CHECK(ll::shuffled_epoch_order(n, seed, e) == order);
      std::vector<int64_t> want;
      for (int64_t i : order) want.push_back(10 + i);
      const std::vector<int64_t> got = take(loader, n);
      CHECK(got == want);
      CHECK(std::set<int64_t>(got.begin(), got.end()).size() == size_t(n));
      for (int64_t i = 0; i < n; ++i) CHECK(loader.example_at({e, i}) == order[size_t(i)]);
      epochs.push_back(got);
    }
    CHECK(epochs[0] != epochs[1]);  // 13! orders: equal by chance essentially never
    CHECK(epochs[1] != epochs[2]);
  }
  // Another seed, another order.
  CHECK(ll::shuffled_epoch_order(n, 1, 0) != ll::shuffled_epoch_order(n, 2, 0));
  // Degenerate sizes.
  CHECK(ll::shuffled_epoch_order(0, 1, 0).empty());
  CHECK(ll::shuffled_epoch_order(1, 1, 5) == std::vector<int64_t>{0});
}

TEST_CASE("resume: seek to a saved position continues the uninterrupted stream") {
  for (bool shuffle : {false, true}) {
    CAPTURE(shuffle);
    SftLoader straight(dataset(5), shuffle, 9);
    const std::vector<int64_t> all = take(straight, 17);
    for (int64_t k : {0, 3, 5, 11}) {
      CAPTURE(k);
      SftLoader first(dataset(5), shuffle, 9);
      const std::vector<int64_t> head = take(first, k);
      const LoaderPosition saved = first.position();
      CHECK(saved == LoaderPosition{k / 5, k % 5});
      SftLoader resumed(dataset(5), shuffle, 9);  // a new process
      resumed.seek(saved);
      std::vector<int64_t> joined = head;
      for (int64_t r : take(resumed, 17 - k)) joined.push_back(r);
      CHECK(joined == all);
    }
  }
}

TEST_CASE("bad positions and empty data are errors; the position stays") {
  SftLoader loader(dataset(4), true, 1);
  take(loader, 2);
  for (const LoaderPosition& bad :
       {LoaderPosition{0, 4}, LoaderPosition{0, -1}, LoaderPosition{-1, 0}}) {
    const std::string msg = error_of([&] { loader.seek(bad); });
    CHECK(contains(msg, "out of range"));
    CHECK(contains(msg, "4 examples"));
  }
  CHECK(loader.position() == LoaderPosition{0, 2});
  CHECK(contains(error_of([] { SftLoader l(ll::SftDataset{}, true, 1); }), "no SFT examples"));
}
