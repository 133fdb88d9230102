// swiglu_backward against central finite differences of a double-precision silu(gate) * up,
// over ordinary and saturating gates; aliasing dgate/gate and dup/up; NaN poison.
#include <doctest/doctest.h>

#include <cstring>

#include "kernels/cpu/swiglu.h"
#include "tests/kernels/kernel_test_util.h"

namespace {

double swiglu(double g, double u) { return g / (1.0 + std::exp(-g)) * u; }

struct Problem {
  std::vector<float> gate, up, dout;  // [n] each
};

Problem make_problem(std::mt19937_64& rng, int64_t n) {
  Problem p{ll::test::random_uniform(rng, size_t(n), -8.0f, 8.0f),
            ll::test::random_uniform(rng, size_t(n), -2.0f, 2.0f),
            ll::test::random_uniform(rng, size_t(n))};
  // Saturating and special gates: silu' -> 1 and -> 0 (exp(-g) overflows fp32 at g < -88),
  // its minimum near g = -2.4, its zero near g = -1.28, and 0.
  const float special[] = {0.0f, -1.2785f, -2.3994f, 20.0f, -20.0f, 60.0f, -60.0f, 100.0f, -100.0f};
  for (size_t i = 0; i < std::size(special) && i < p.gate.size(); ++i) p.gate[i] = special[i];
  return p;
}

TEST_CASE("swiglu_backward equals central finite differences of sum(dout * silu(gate) * up)") {
  for (uint64_t seed : ll::test::test_seeds()) {
    INFO("seed " << seed);
    std::mt19937_64 rng(seed);
    for (int64_t n : {1, 9, 1000}) {
      CAPTURE(n);
      const Problem p = make_problem(rng, n);
      // Elementwise: d L / d gate[i] only involves element i. Step 1e-5 in double:
      // truncation ~1e-11, rounding ~1e-11.
      const double h = 1e-5;
      std::vector<double> dgate_fd(static_cast<size_t>(n)), dup_fd(static_cast<size_t>(n));
      for (size_t i = 0; i < size_t(n); ++i) {
        const double g = p.gate[i], u = p.up[i], go = p.dout[i];
        dgate_fd[i] = go * (swiglu(g + h, u) - swiglu(g - h, u)) / (2.0 * h);
        dup_fd[i] = go * (swiglu(g, u + h) - swiglu(g, u - h)) / (2.0 * h);
      }
      auto dgate = ll::test::poisoned(size_t(n));
      auto dup = ll::test::poisoned(size_t(n));
      ll::cpu::swiglu_backward(dgate.data(), dup.data(), p.dout.data(), p.gate.data(), p.up.data(),
                               n);
      // A handful of fp32 roundings, and 1 + g (1 - s) cancels near g = -1.28: an absolute
      // term of a few ulps of |dout * up|.
      {
        INFO("dgate");
        ll::test::check_close(dgate, dgate_fd, 5e-7, 1e-6, 1e-6);
      }
      {
        INFO("dup");
        ll::test::check_close(dup, dup_fd, 5e-7, 1e-6, 1e-6);
      }

      // In place (dgate = gate, dup = up), as the backward schedule uses it: the same bits.
      auto g_inplace = p.gate;
      auto u_inplace = p.up;
      ll::cpu::swiglu_backward(g_inplace.data(), u_inplace.data(), p.dout.data(), g_inplace.data(),
                               u_inplace.data(), n);
      CHECK(std::memcmp(g_inplace.data(), dgate.data(), size_t(n) * sizeof(float)) == 0);
      CHECK(std::memcmp(u_inplace.data(), dup.data(), size_t(n) * sizeof(float)) == 0);
    }
  }
}

}  // namespace
