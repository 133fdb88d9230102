#include "kernels/cpu/swiglu.h"

#include <cmath>

namespace ll::cpu {

void swiglu_forward(float* out, const float* gate, const float* up, int64_t n) {
  // Elementwise, so aliasing out with gate or up is safe.
#pragma omp parallel for
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    // silu(g) = g / (1 + exp(-g)) as torch computes it; exp(-g) = inf gives -0, not NaN.
    out[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

void swiglu_backward(float* dgate, float* dup, const float* dout, const float* gate,
                     const float* up, int64_t n) {
  // With s = sigmoid(g): silu(g) = g * s and silu'(g) = s * (1 + g * (1 - s)), so
  //   dgate = dout * up * s * (1 + g * (1 - s)),  dup = dout * silu(g).
  // exp(-g) = inf gives s = 0 and a zero dgate, not NaN. Both inputs are read before either
  // gradient is written, so dgate may alias gate and dup may alias up.
#pragma omp parallel for
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    const float u = up[i];
    const float go = dout[i];
    const float e = 1.0f + std::exp(-g);
    const float s = 1.0f / e;
    dgate[i] = go * u * (s * (1.0f + g * (1.0f - s)));
    dup[i] = go * (g / e);  // silu(g) exactly as the forward rounds it
  }
}

}  // namespace ll::cpu
