// Cached attention (inference) against the dense causal forward: the n queries at positions
// [past, past + n) attending to a cache of past + n keys give exactly the rows [past,
// past + n) of attention_forward over the whole sequence (MHA, GQA, MQA; n = 1 decode and
// n > 1 chunks; past 0 and beyond).
#include <doctest/doctest.h>

#include <random>
#include <vector>

#include "common/error.h"
#include "kernels/attention_pattern.h"
#include "kernels/cpu/attention.h"
#include "tests/kernels/kernel_test_util.h"

TEST_CASE("cpu attention_forward_cached equals the matching rows of the dense forward") {
  struct Shape {
    int64_t h, hkv, hd;
  };
  for (const uint64_t seed : ll::test::test_seeds()) {
    std::mt19937_64 rng(seed);
    for (const Shape s : {Shape{4, 4, 16}, Shape{8, 2, 32}, Shape{4, 1, 8}}) {
      for (const auto& [past, n] : std::vector<std::pair<int64_t, int64_t>>{
               {0, 1}, {0, 7}, {5, 1}, {37, 1}, {37, 6}, {64, 33}}) {
        INFO("H ", s.h, " Hkv ", s.hkv, " hd ", s.hd, " past ", past, " n ", n, " seed ", seed);
        const int64_t total = past + n, q_row = s.h * s.hd, kv_row = s.hkv * s.hd;
        const std::vector<float> q = ll::test::random_uniform(rng, size_t(total * q_row), -2, 2);
        const std::vector<float> k = ll::test::random_uniform(rng, size_t(total * kv_row), -2, 2);
        const std::vector<float> v = ll::test::random_uniform(rng, size_t(total * kv_row));
        std::vector<float> full(size_t(total * q_row)), lse(size_t(s.h * total));
        ll::cpu::attention_forward(full.data(), lse.data(), q.data(), k.data(), v.data(), total,
                                   s.h, s.hkv, s.hd,
                                   ll::AttentionPattern{ll::AttnMode::Dense, total, 0, s.h});
        std::vector<float> out = ll::test::poisoned(size_t(n * q_row));
        ll::cpu::attention_forward_cached(out.data(), q.data() + past * q_row, k.data(), v.data(),
                                          n, past, s.h, s.hkv, s.hd);
        const std::vector<double> ref(full.begin() + past * q_row, full.end());
        ll::test::check_close(out, ref, 1e-6, 1e-5, 1e-6);
      }
    }
  }
}

TEST_CASE("cpu attention_forward_cached: a query sees only the keys up to its position") {
  // The last key's value is huge; queries before it must not see it.
  const int64_t h = 1, hd = 4, past = 3, n = 2;
  std::vector<float> q(size_t(n * hd), 0.0f);  // zero queries: uniform weights over visible keys
  std::vector<float> k(size_t((past + n) * hd), 0.0f), v(size_t((past + n) * hd), 0.0f);
  for (int64_t j = 0; j < past + n; ++j) v[size_t(j * hd)] = float(j);
  std::vector<float> out(size_t(n * hd));
  ll::cpu::attention_forward_cached(out.data(), q.data(), k.data(), v.data(), n, past, h, h, hd);
  CHECK(out[0] == doctest::Approx((0 + 1 + 2 + 3) / 4.0));       // query at position 3
  CHECK(out[hd] == doctest::Approx((0 + 1 + 2 + 3 + 4) / 5.0));  // query at position 4
}

TEST_CASE("cpu attention_forward_cached rejects bad arguments") {
  std::vector<float> buf(64, 0.0f);
  CHECK_THROWS_AS(ll::cpu::attention_forward_cached(buf.data(), buf.data(), buf.data(), buf.data(),
                                                    1, -1, 2, 2, 4),
                  ll::Error);
  CHECK_THROWS_AS(ll::cpu::attention_forward_cached(buf.data(), buf.data(), buf.data(), buf.data(),
                                                    1, 0, 3, 2, 4),
                  ll::Error);
}
