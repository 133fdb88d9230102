// The elementwise ops the backward pass and the optimizer use on gradient buffers:
// fill_zero, scale_inplace, and sum_squares (the gradient norm), which must give the same
// bits for any thread count.
#include <doctest/doctest.h>
#include <omp.h>

#include <cstring>

#include "kernels/cpu/elementwise.h"
#include "tests/kernels/kernel_test_util.h"

namespace {

// Sizes around the 4096-element blocks of sum_squares, and large enough to run in parallel.
const int64_t kSizes[] = {0, 1, 7, 4095, 4096, 4097, 3 * 4096 + 5, 200003};

TEST_CASE("fill_zero writes n zeros and nothing past them") {
  for (int64_t n : kSizes) {
    CAPTURE(n);
    auto x = ll::test::poisoned(size_t(n + 1));
    x[size_t(n)] = 42.0f;  // sentinel
    ll::cpu::fill_zero(x.data(), n);
    int64_t not_zero = 0;
    for (int64_t i = 0; i < n; ++i) not_zero += !(x[size_t(i)] == 0.0f);
    CHECK(not_zero == 0);
    CHECK(x[size_t(n)] == 42.0f);
  }
}

TEST_CASE("scale_inplace is one correctly rounded fp32 multiply per element") {
  for (uint64_t seed : ll::test::test_seeds()) {
    INFO("seed " << seed);
    std::mt19937_64 rng(seed);
    for (int64_t n : kSizes) {
      for (float s : {0.125f, -0.3f, 1e-4f, 0.0f}) {
        CAPTURE(n);
        CAPTURE(s);
        auto x = ll::test::random_uniform(rng, size_t(n + 1), -100.0f, 100.0f);
        const auto before = x;
        ll::cpu::scale_inplace(x.data(), s, n);
        size_t bad = 0;
        // The double product of two floats is exact, so rounding it once is the fp32 product.
        for (int64_t i = 0; i < n; ++i)
          if (x[size_t(i)] != float(double(before[size_t(i)]) * double(s))) ++bad;
        CHECK(bad == 0);
        CHECK(x[size_t(n)] == before[size_t(n)]);
      }
    }
  }
}

TEST_CASE("sum_squares matches an extended-precision sum and is independent of thread count") {
  for (uint64_t seed : ll::test::test_seeds()) {
    INFO("seed " << seed);
    std::mt19937_64 rng(seed);
    for (int64_t n : kSizes) {
      CAPTURE(n);
      const auto x = ll::test::random_uniform(rng, size_t(n), -3.0f, 3.0f);
      long double ref = 0.0L;
      for (float v : x) ref += (long double)v * (long double)v;
      const double got = ll::cpu::sum_squares(x.data(), n);
      // Each square is exact in double; the blocked sum's error is below
      // (4096 + n / 4096) * 2^-53 of the total.
      CHECK(std::fabs(double((long double)got - ref)) <= 1e-12 * double(ref));
      if (n == 0) CHECK(got == 0.0);

      const int threads = omp_get_max_threads();
      for (int t : {1, 2, 3, 7}) {
        CAPTURE(t);
        omp_set_num_threads(t);
        const double again = ll::cpu::sum_squares(x.data(), n);
        CHECK(std::memcmp(&again, &got, sizeof(double)) == 0);
      }
      omp_set_num_threads(threads);
    }
  }
}

TEST_CASE("sum_squares propagates NaN and Inf (a diverged gradient must be seen)") {
  std::vector<float> x(10000, 0.5f);
  x[5000] = std::numeric_limits<float>::quiet_NaN();
  CHECK(std::isnan(ll::cpu::sum_squares(x.data(), int64_t(x.size()))));
  x[5000] = std::numeric_limits<float>::infinity();
  CHECK(std::isinf(ll::cpu::sum_squares(x.data(), int64_t(x.size()))));
}

}  // namespace
