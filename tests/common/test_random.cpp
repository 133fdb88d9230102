// SplitMix64 and derive_seed: the reference stream, below()'s range and uniformity, uniform()'s
// range, and reproducibility (the data order and LoRA initialisation depend on it).
#include <doctest/doctest.h>

#include <cmath>
#include <set>
#include <vector>

#include "common/random.h"

TEST_CASE("SplitMix64 reproduces the reference stream") {
  // Vigna's splitmix64.c with state 0 gives these first outputs.
  ll::SplitMix64 r{0};
  CHECK(r.next() == 0xE220A8397B1DCDAFull);
  CHECK(r.next() == 0x6E789E6AA1B965F4ull);
  CHECK(r.next() == 0x06C45D188009454Full);
  CHECK(r.state == 3 * 0x9E3779B97F4A7C15ull);  // the whole state is the counter
}

TEST_CASE("same seed, same stream; different seeds, different streams") {
  for (uint64_t seed : {uint64_t(0), uint64_t(1), uint64_t(42), ~uint64_t(0)}) {
    ll::SplitMix64 a{seed}, b{seed}, c{seed + 1};
    int equal_to_other = 0;
    for (int i = 0; i < 1000; ++i) {
      const uint64_t x = a.next();
      CHECK(x == b.next());
      equal_to_other += x == c.next();
    }
    CHECK(equal_to_other == 0);
  }
  // Copying the state resumes the stream exactly (what a checkpoint does).
  ll::SplitMix64 a{123};
  for (int i = 0; i < 17; ++i) a.next();
  ll::SplitMix64 resumed{a.state};
  for (int i = 0; i < 100; ++i) CHECK(a.next() == resumed.next());
}

TEST_CASE("below(n) stays in [0, n)") {
  ll::SplitMix64 r{7};
  for (int i = 0; i < 1000; ++i) CHECK(r.below(1) == 0);
  const uint64_t ns[] = {2, 3, 7, 10, 1000, 1ull << 32, (1ull << 63) + 1, ~uint64_t(0)};
  for (uint64_t n : ns) {
    CAPTURE(n);
    for (int i = 0; i < 5000; ++i) REQUIRE(r.below(n) < n);
  }
  // n just above 2^63 rejects almost half of the draws but still returns both halves.
  bool low = false, high = false;
  for (int i = 0; i < 200; ++i) {
    const uint64_t x = r.below((1ull << 63) + 1);
    low |= x < (1ull << 62);
    high |= x >= (1ull << 62);
  }
  CHECK(low);
  CHECK(high);
}

TEST_CASE("below(n) is uniform (chi-square)") {
  // Pearson chi-square over n buckets with n - 1 degrees of freedom: mean n - 1, standard
  // deviation sqrt(2 (n - 1)). Allow 6 standard deviations (a fixed seed, so no flakiness, but
  // the bound is what a fair generator meets).
  for (uint64_t n : {uint64_t(2), uint64_t(6), uint64_t(10), uint64_t(97), uint64_t(1000)}) {
    CAPTURE(n);
    ll::SplitMix64 r{1000 + n};
    const int draws = int(2000 * n);
    std::vector<int> count(n, 0);
    for (int i = 0; i < draws; ++i) ++count[r.below(n)];
    const double expected = double(draws) / double(n);
    double chi2 = 0.0;
    for (int c : count) chi2 += (c - expected) * (c - expected) / expected;
    const double dof = double(n - 1);
    CHECK(chi2 < dof + 6.0 * std::sqrt(2.0 * dof));
  }
  // A range where modulo reduction would be visibly biased: n = 3 * 2^62 maps [0, 2^64) with
  // x % n so that the low third of the range would get twice the draws. Rejection keeps the
  // three thirds even.
  const uint64_t n = 3ull << 62;
  const uint64_t third = 1ull << 62;
  ll::SplitMix64 r{5};
  int thirds[3] = {0, 0, 0};
  const int draws = 30000;
  for (int i = 0; i < draws; ++i) ++thirds[r.below(n) / third];
  for (int t : thirds) CHECK(std::abs(t - draws / 3) < 600);  // ~7 standard deviations
}

TEST_CASE("uniform() is in [0, 1) with the right mean") {
  ll::SplitMix64 r{11};
  double sum = 0.0;
  const int draws = 100000;
  for (int i = 0; i < draws; ++i) {
    const double u = r.uniform();
    REQUIRE(u >= 0.0);
    REQUIRE(u < 1.0);
    sum += u;
  }
  // Standard deviation of the mean: 1 / sqrt(12 draws) ~ 0.0009.
  CHECK(std::abs(sum / draws - 0.5) < 0.005);
}

TEST_CASE("derive_seed: deterministic, distinct across streams and seeds") {
  CHECK(ll::derive_seed(1, 2) == ll::derive_seed(1, 2));
  std::set<uint64_t> seen;
  for (uint64_t seed = 0; seed < 32; ++seed)
    for (uint64_t stream = 0; stream < 32; ++stream) seen.insert(ll::derive_seed(seed, stream));
  CHECK(seen.size() == 32 * 32);
  // Neighbouring streams give unrelated first draws (not shifted copies of one another).
  ll::SplitMix64 a{ll::derive_seed(9, 0)}, b{ll::derive_seed(9, 1)};
  const uint64_t a0 = a.next(), a1 = a.next();
  const uint64_t b0 = b.next();
  CHECK(a0 != b0);
  CHECK(a1 != b0);
}
