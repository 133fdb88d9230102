#pragma once
#include <cstdint>

namespace ll::cpu {

// x += y over n elements (residual connections).
void add_inplace(float* x, const float* y, int64_t n);

}  // namespace ll::cpu
