#include "kernels/cpu/rmsnorm.h"

#include <cmath>

#include "common/error.h"

namespace ll::cpu {

void rmsnorm_forward(float* out, float* rstd, const float* x, const float* weight, int64_t n_rows,
                     int64_t dim, float eps) {
  LL_CHECK(n_rows >= 0 && dim >= 1, "rmsnorm: bad shape [{}, {}]", n_rows, dim);
#pragma omp parallel for
  for (int64_t n = 0; n < n_rows; ++n) {
    const float* xr = x + n * dim;  // [D]
    float* orow = out + n * dim;    // [D], may alias xr: the row is read fully before writing
    // The mean of squares in double, rounded once: what torch's cascaded fp32 mean gives up
    // to rounding, and independent of D.
    double ss = 0.0;
    for (int64_t d = 0; d < dim; ++d) ss += double(xr[d]) * double(xr[d]);
    const float variance = float(ss / double(dim));
    // HF: x * rsqrt(var + eps), then weight * (that), all fp32 in this order.
    const float r = 1.0f / std::sqrt(variance + eps);
    for (int64_t d = 0; d < dim; ++d) orow[d] = weight[d] * (xr[d] * r);
    if (rstd != nullptr) rstd[n] = r;
  }
}

}  // namespace ll::cpu
