#include "kernels/cpu/rmsnorm.h"

#include <algorithm>
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

void rmsnorm_backward(float* dx, float* dweight, const float* dout, const float* x,
                      const float* weight, const float* rstd, int64_t n_rows, int64_t dim) {
  LL_CHECK(n_rows >= 0 && dim >= 1, "rmsnorm_backward: bad shape [{}, {}]", n_rows, dim);
  // y_d = w_d * x_d * r with r = (mean(x^2) + eps)^(-1/2), so dr/dx_d = -r^3 * x_d / D and
  //   dx_d = r * w_d * dout_d - (r^3 / D) * x_d * sum_e(dout_e * w_e * x_e).
  // The row sum and the per-element combination are done in double, rounded once.
#pragma omp parallel for
  for (int64_t n = 0; n < n_rows; ++n) {
    const float* xr = x + n * dim;     // [D]
    const float* gr = dout + n * dim;  // [D]
    float* dxr = dx + n * dim;         // [D]
    const double r = double(rstd[n]);
    double dot = 0.0;
    for (int64_t d = 0; d < dim; ++d) dot += double(gr[d]) * double(weight[d]) * double(xr[d]);
    const double coef = dot * r * r * r / double(dim);
    for (int64_t d = 0; d < dim; ++d) {
      const double g = r * double(weight[d]) * double(gr[d]) - coef * double(xr[d]);
      dxr[d] += float(g);
    }
  }
  if (dweight == nullptr) return;
  // dweight_d = sum over rows of dout * x * r. Parallel over blocks of columns with each
  // column summed over rows in order: deterministic for any thread count, rows read
  // contiguously within a block.
  constexpr int64_t kBlock = 64;
  const int64_t n_blocks = (dim + kBlock - 1) / kBlock;
#pragma omp parallel for
  for (int64_t b = 0; b < n_blocks; ++b) {
    const int64_t d0 = b * kBlock;
    const int64_t width = std::min(kBlock, dim - d0);
    double acc[kBlock] = {};  // [width] column sums
    for (int64_t n = 0; n < n_rows; ++n) {
      const float* xr = x + n * dim + d0;     // [width]
      const float* gr = dout + n * dim + d0;  // [width]
      const double r = double(rstd[n]);
      for (int64_t d = 0; d < width; ++d) acc[d] += double(gr[d]) * double(xr[d]) * r;
    }
    for (int64_t d = 0; d < width; ++d) dweight[d0 + d] += float(acc[d]);
  }
}

}  // namespace ll::cpu
