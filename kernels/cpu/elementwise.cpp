#include "kernels/cpu/elementwise.h"

#include <algorithm>
#include <vector>

namespace ll::cpu {

void add_inplace(float* x, const float* y, int64_t n) {
#pragma omp parallel for
  for (int64_t i = 0; i < n; ++i) x[i] += y[i];
}

void fill_zero(float* x, int64_t n) {
#pragma omp parallel for
  for (int64_t i = 0; i < n; ++i) x[i] = 0.0f;
}

double sum_squares(const float* x, int64_t n) {
  // An OpenMP reduction adds per-thread partials in an order that depends on the thread
  // count. Fixed blocks instead: each block's partial is summed in order, then the partials
  // in block order, so the result is the same bits for any number of threads.
  constexpr int64_t kBlock = 4096;
  const int64_t n_blocks = n > 0 ? (n + kBlock - 1) / kBlock : 0;
  std::vector<double> partial(static_cast<size_t>(n_blocks));  // [n_blocks]
#pragma omp parallel for
  for (int64_t b = 0; b < n_blocks; ++b) {
    const int64_t end = std::min(n, (b + 1) * kBlock);
    double s = 0.0;
    for (int64_t i = b * kBlock; i < end; ++i) s += double(x[i]) * double(x[i]);
    partial[size_t(b)] = s;
  }
  double total = 0.0;
  for (double s : partial) total += s;
  return total;
}

void scale_inplace(float* x, float s, int64_t n) {
#pragma omp parallel for
  for (int64_t i = 0; i < n; ++i) x[i] *= s;
}

}  // namespace ll::cpu
