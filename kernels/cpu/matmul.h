#pragma once
#include <cstdint>

namespace ll::cpu {

// out[M, Nout] = x[M, K] @ w[Nout, K]^T  (+ out when accumulate). Linear layers in HF layout.
void matmul_forward(float* out, const float* x, const float* w, int64_t m, int64_t k,
                    int64_t n_out, bool accumulate);

}  // namespace ll::cpu
