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

}  // namespace ll::cpu
