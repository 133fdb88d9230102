// Linear-layer bias: out[r, :] += bias is one correctly rounded fp32 add per element, against
// a long double reference; C = 1, M = 1, odd C, M = 0 (nothing written), NaN propagates.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "kernels/cpu/bias.h"
#include "tests/kernels/kernel_test_util.h"

namespace {

struct Shape {
  int64_t m, c;
};
const Shape kShapes[] = {{1, 1}, {1, 7}, {9, 1}, {5, 13}, {64, 64}, {300, 257}, {2000, 24}};

TEST_CASE("add_bias adds the bias to every row, one fp32 rounding per element") {
  for (uint64_t seed : ll::test::test_seeds()) {
    INFO("seed " << seed);
    std::mt19937_64 rng(seed);
    for (const Shape s : kShapes) {
      INFO("shape [" << s.m << ", " << s.c << "]");
      auto out = ll::test::random_uniform(rng, size_t(s.m * s.c), -100.0f, 100.0f);  // [M, C]
      const auto bias = ll::test::random_uniform(rng, size_t(s.c), -1.0f, 1.0f);     // [C]
      std::vector<double> ref(out.size());                                           // [M, C]
      for (int64_t r = 0; r < s.m; ++r)
        for (int64_t j = 0; j < s.c; ++j) {
          const size_t i = size_t(r * s.c + j);
          ref[i] = double((long double)out[i] + (long double)bias[size_t(j)]);
        }
      ll::cpu::add_bias(out.data(), bias.data(), s.m, s.c);
      // One rounding: within the unit roundoff 2^-24 (5.96e-8) of the exact sum.
      ll::test::check_close(out, ref, 0.0, 6e-8);
    }
  }
}

TEST_CASE("add_bias with no rows writes nothing; NaN in the bias propagates") {
  std::vector<float> out = {1.0f, 2.0f, 3.0f, 4.0f};
  const std::vector<float> bias = {std::numeric_limits<float>::quiet_NaN(), 0.5f};
  ll::cpu::add_bias(out.data(), bias.data(), 0, 2);
  CHECK(out == std::vector<float>{1.0f, 2.0f, 3.0f, 4.0f});
  ll::cpu::add_bias(out.data(), bias.data(), 2, 2);
  CHECK(std::isnan(out[0]));
  CHECK(std::isnan(out[2]));
  CHECK(out[1] == 2.5f);
  CHECK(out[3] == 4.5f);
  CHECK_THROWS_AS(ll::cpu::add_bias(out.data(), bias.data(), -1, 2), ll::Error);
}

}  // namespace
