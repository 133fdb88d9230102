#include "kernels/cpu/elementwise.h"

namespace ll::cpu {

void add_inplace(float* x, const float* y, int64_t n) {
#pragma omp parallel for
  for (int64_t i = 0; i < n; ++i) x[i] += y[i];
}

}  // namespace ll::cpu
