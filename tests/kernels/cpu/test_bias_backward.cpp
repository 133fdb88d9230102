// The bias gradient dbias += column sums of dout: against a long double sum within one fp32
// rounding (also at M = 500k rows, columns around a nonzero mean), the same bits for any thread
// count, M = 0 adding nothing, and by central finite differences of a loss through add_bias.
#include <doctest/doctest.h>
#include <omp.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/cpu/bias.h"
#include "tests/kernels/kernel_test_util.h"

namespace {

struct Shape {
  int64_t m, c;
};
// C = 1; M = 1; odd C; C past one 64-column block (65, 130); half a million rows.
const Shape kShapes[] = {{1, 1},    {3, 1},    {1, 5},      {7, 13},
                         {100, 65}, {33, 130}, {500000, 3}, {20000, 64}};

TEST_CASE("bias_backward adds the column sums, rounded once, for any thread count") {
  for (uint64_t seed : ll::test::test_seeds()) {
    INFO("seed " << seed);
    std::mt19937_64 rng(seed);
    for (const Shape s : kShapes) {
      INFO("shape [" << s.m << ", " << s.c << "]");
      const auto mean = ll::test::random_uniform(rng, size_t(s.c), -1.0f, 1.0f);  // [C]
      auto dout = ll::test::random_uniform(rng, size_t(s.m * s.c), -1.0f, 1.0f);  // [M, C]
      for (size_t i = 0; i < dout.size(); ++i) dout[i] += mean[i % size_t(s.c)];
      const auto dbias0 = ll::test::random_uniform(rng, size_t(s.c), -4.0f, 4.0f);   // [C]
      std::vector<long double> ref(dbias0.begin(), dbias0.end()), mag(size_t(s.c));  // [C]
      for (int64_t r = 0; r < s.m; ++r)
        for (int64_t j = 0; j < s.c; ++j) {
          ref[size_t(j)] += dout[size_t(r * s.c + j)];
          mag[size_t(j)] += std::fabs((long double)dout[size_t(r * s.c + j)]);
        }
      auto dbias = dbias0;
      ll::cpu::bias_backward(dbias.data(), dout.data(), s.m, s.c);
      // Summed in double, rounded to fp32 once: within 2^-24 of the exact value, plus M
      // double roundings of the terms' magnitudes.
      size_t bad = 0;
      for (size_t j = 0; j < dbias.size(); ++j) {
        const long double err = std::fabs((long double)dbias[j] - ref[j]);
        const long double allowed = std::ldexp(std::fabs(ref[j]), -24) +
                                    std::ldexp(mag[j] + std::fabs(ref[j]), -53) * (s.m + 1);
        bad += !(err <= allowed);
      }
      CHECK(bad == 0);

      const int threads = omp_get_max_threads();
      for (int t : {1, 2, 3}) {
        CAPTURE(t);
        omp_set_num_threads(t);
        auto again = dbias0;
        ll::cpu::bias_backward(again.data(), dout.data(), s.m, s.c);
        CHECK(std::memcmp(again.data(), dbias.data(), dbias.size() * sizeof(float)) == 0);
      }
      omp_set_num_threads(threads);
    }
  }
}

TEST_CASE("bias_backward with no rows adds nothing") {
  std::vector<float> dbias = {1.5f, -2.0f};
  ll::cpu::bias_backward(dbias.data(), nullptr, 0, 2);
  CHECK(dbias == std::vector<float>{1.5f, -2.0f});
  CHECK_THROWS_AS(ll::cpu::bias_backward(dbias.data(), nullptr, 1, -2), ll::Error);
}

TEST_CASE("bias_backward is the gradient of add_bias (central finite differences)") {
  // loss = sum(w * add_bias(x, bias)); d loss / d bias_j = sum over rows of w[r, j].
  std::mt19937_64 rng(ll::test::test_seeds()[1]);
  const int64_t m = 6, c = 5;
  const auto x = ll::test::random_uniform(rng, size_t(m * c));  // [M, C]
  const auto w = ll::test::random_uniform(rng, size_t(m * c));  // [M, C] the loss's dout
  auto bias = ll::test::random_uniform(rng, size_t(c));         // [C]
  auto loss = [&] {
    std::vector<float> out = x;
    ll::cpu::add_bias(out.data(), bias.data(), m, c);
    double l = 0.0;
    for (size_t i = 0; i < out.size(); ++i) l += double(w[i]) * double(out[i]);
    return l;
  };
  std::vector<float> grad(static_cast<size_t>(c), 0.0f);  // [C]
  ll::cpu::bias_backward(grad.data(), w.data(), m, c);
  const float h = 0.25f;  // the loss is linear: no truncation error, a large step is exact
  std::vector<double> fd(static_cast<size_t>(c));  // [C]
  for (int64_t j = 0; j < c; ++j) {
    const float b = bias[size_t(j)];
    bias[size_t(j)] = b + h;
    const double up = loss();
    bias[size_t(j)] = b - h;
    const double down = loss();
    bias[size_t(j)] = b;
    fd[size_t(j)] = (up - down) / (2.0 * double(h));
  }
  // Only the fp32 roundings of out (|out| <= 2.25, 2^-24 each) over 2h: below 1e-5.
  ll::test::check_close(grad, fd, 1e-4, 1e-4, 1e-4);
}

}  // namespace
