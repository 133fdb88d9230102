#include "kernels/cpu/bias.h"

#include <algorithm>

#include "common/error.h"

namespace ll::cpu {

void add_bias(float* out, const float* bias, int64_t m, int64_t c) {
  LL_CHECK(m >= 0 && c >= 0, "add_bias: bad shape [{}, {}]", m, c);
#pragma omp parallel for
  for (int64_t r = 0; r < m; ++r) {
    float* row = out + r * c;  // [C]
    for (int64_t j = 0; j < c; ++j) row[j] += bias[j];
  }
}

void bias_backward(float* dbias, const float* dout, int64_t m, int64_t c) {
  LL_CHECK(m >= 0 && c >= 0, "bias_backward: bad shape [{}, {}]", m, c);
  // Parallel over blocks of columns, each column summed over rows in order: deterministic for
  // any thread count, and rows are read contiguously within a block.
  constexpr int64_t kBlock = 64;
  const int64_t n_blocks = (c + kBlock - 1) / kBlock;
#pragma omp parallel for
  for (int64_t b = 0; b < n_blocks; ++b) {
    const int64_t j0 = b * kBlock;
    const int64_t width = std::min(kBlock, c - j0);
    double acc[kBlock] = {};  // [width] column sums
    for (int64_t r = 0; r < m; ++r) {
      const float* row = dout + r * c + j0;  // [width]
      for (int64_t j = 0; j < width; ++j) acc[j] += double(row[j]);
    }
    for (int64_t j = 0; j < width; ++j) dbias[j0 + j] = float(double(dbias[j0 + j]) + acc[j]);
  }
}

}  // namespace ll::cpu
