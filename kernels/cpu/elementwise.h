#pragma once
#include <cstdint>

namespace ll::cpu {

// x += y over n elements (residual connections).
void add_inplace(float* x, const float* y, int64_t n);

// x = 0 over n elements.
void fill_zero(float* x, int64_t n);
// sum of x[i]^2 in double (gradient norms).
double sum_squares(const float* x, int64_t n);
// x *= s over n elements.
void scale_inplace(float* x, float s, int64_t n);

}  // namespace ll::cpu
