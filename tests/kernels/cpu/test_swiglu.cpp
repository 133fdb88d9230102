// SwiGLU: silu(gate) * up against a double reference, including large |gate| and aliasing.
#include <doctest/doctest.h>

#include "kernels/cpu/swiglu.h"
#include "tests/kernels/kernel_test_util.h"

namespace {

std::vector<double> reference(const std::vector<float>& gate, const std::vector<float>& up) {
  std::vector<double> ref(gate.size());  // [n]
  for (size_t i = 0; i < gate.size(); ++i) {
    const double g = gate[i];
    ref[i] = g / (1.0 + std::exp(-g)) * double(up[i]);
  }
  return ref;
}

TEST_CASE("swiglu_forward matches silu(gate) * up") {
  for (uint64_t seed : ll::test::test_seeds()) {
    INFO("seed " << seed);
    std::mt19937_64 rng(seed);
    for (int64_t n : {1, 7, 4099}) {
      CAPTURE(n);
      auto gate = ll::test::random_uniform(rng, size_t(n), -12.0f, 12.0f);    // [n]
      const auto up = ll::test::random_uniform(rng, size_t(n), -3.0f, 3.0f);  // [n]
      if (n > 2) {
        // exp(100) overflows in fp32: silu must give -0 there, not NaN; and +100 passes through.
        gate[0] = -100.0f;
        gate[1] = 100.0f;
      }
      const auto ref = reference(gate, up);

      auto out = ll::test::poisoned(size_t(n));  // [n]
      ll::cpu::swiglu_forward(out.data(), gate.data(), up.data(), n);
      ll::test::check_close(out, ref, 1e-7, 1e-6);

      auto in_gate = gate;  // out aliases gate
      ll::cpu::swiglu_forward(in_gate.data(), in_gate.data(), up.data(), n);
      ll::test::check_close(in_gate, ref, 1e-7, 1e-6);

      auto in_up = up;  // out aliases up
      ll::cpu::swiglu_forward(in_up.data(), gate.data(), in_up.data(), n);
      ll::test::check_close(in_up, ref, 1e-7, 1e-6);
    }
  }
}

}  // namespace
