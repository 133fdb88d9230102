// Residual add: x += y is one correctly rounded fp32 add per element.
#include <doctest/doctest.h>

#include "kernels/cpu/elementwise.h"
#include "tests/kernels/kernel_test_util.h"

namespace {

TEST_CASE("add_inplace adds elementwise") {
  for (uint64_t seed : ll::test::test_seeds()) {
    INFO("seed " << seed);
    std::mt19937_64 rng(seed);
    for (int64_t n : {1, 7, 1000, 65537}) {
      CAPTURE(n);
      auto x = ll::test::random_uniform(rng, size_t(n), -100.0f, 100.0f);    // [n]
      const auto y = ll::test::random_uniform(rng, size_t(n), -1.0f, 1.0f);  // [n]
      std::vector<double> ref(static_cast<size_t>(n));                       // [n]
      for (size_t i = 0; i < ref.size(); ++i) ref[i] = double(x[i]) + double(y[i]);
      ll::cpu::add_inplace(x.data(), y.data(), n);
      // One rounding: within the unit roundoff 2^-24 (5.96e-8) of the exact sum.
      ll::test::check_close(x, ref, 0.0, 6e-8);
    }
  }
}

TEST_CASE("add_inplace propagates NaN") {
  std::vector<float> x = {1.0f, 2.0f};
  const std::vector<float> y = {std::numeric_limits<float>::quiet_NaN(), 1.0f};
  ll::cpu::add_inplace(x.data(), y.data(), 2);
  CHECK(std::isnan(x[0]));
  CHECK(x[1] == 3.0f);
}

}  // namespace
