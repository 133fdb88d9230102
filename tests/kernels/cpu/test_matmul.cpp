// matmul: out (+)= x @ w^T against a double reference, odd shapes, accumulate, NaN poison.
#include <doctest/doctest.h>

#include <cmath>

#include "kernels/cpu/matmul.h"
#include "tests/kernels/kernel_test_util.h"

namespace {

TEST_CASE("matmul_forward matches x @ w^T") {
  for (uint64_t seed : ll::test::test_seeds()) {
    INFO("seed " << seed);
    std::mt19937_64 rng(seed);
    struct Shape {
      int64_t m, k, n_out;
    };
    for (auto [m, k, n_out] :
         {Shape{1, 1, 1}, {1, 64, 33}, {7, 13, 5}, {33, 64, 17}, {64, 256, 96}, {129, 37, 1}}) {
      for (bool accumulate : {false, true}) {
        CAPTURE(m);
        CAPTURE(k);
        CAPTURE(n_out);
        CAPTURE(accumulate);
        const auto x = ll::test::random_uniform(rng, size_t(m * k));      // [M, K]
        const auto w = ll::test::random_uniform(rng, size_t(n_out * k));  // [Nout, K]
        // Accumulate onto random values; otherwise start from NaN, which beta 0 must ignore.
        auto out = accumulate ? ll::test::random_uniform(rng, size_t(m * n_out))
                              : ll::test::poisoned(size_t(m * n_out));  // [M, Nout]
        std::vector<double> ref(static_cast<size_t>(m * n_out));        // [M, Nout]
        std::vector<double> terms(ref.size());  // |prior| + |product|: see rel_norm_tol_of_terms
        for (int64_t i = 0; i < m; ++i) {
          for (int64_t j = 0; j < n_out; ++j) {
            const double prior = accumulate ? double(out[size_t(i * n_out + j)]) : 0.0;
            double s = 0.0;
            for (int64_t p = 0; p < k; ++p)
              s += double(x[size_t(i * k + p)]) * double(w[size_t(j * k + p)]);
            ref[size_t(i * n_out + j)] = prior + s;
            terms[size_t(i * n_out + j)] = std::fabs(prior) + std::fabs(s);
          }
        }
        ll::cpu::matmul_forward(out.data(), x.data(), w.data(), m, k, n_out, accumulate);
        // fp32 dot products of length K: absolute error grows like sqrt(K) * eps * |terms|.
        ll::test::check_close(out, ref, 1.5e-6 * std::sqrt(double(k)), 1e-6,
                              ll::test::rel_norm_tol_of_terms(ref, terms));
      }
    }
  }
}

TEST_CASE("matmul_forward with K = 0 writes zeros or leaves out unchanged") {
  std::vector<float> out = ll::test::poisoned(6);  // [2, 3]
  ll::cpu::matmul_forward(out.data(), nullptr, nullptr, 2, 0, 3, false);
  for (float v : out) CHECK(v == 0.0f);
  std::vector<float> acc(6, 2.5f);  // [2, 3]
  ll::cpu::matmul_forward(acc.data(), nullptr, nullptr, 2, 0, 3, true);
  for (float v : acc) CHECK(v == 2.5f);
}

}  // namespace
