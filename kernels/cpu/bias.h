#pragma once
#include <cstdint>

namespace ll::cpu {

// out[m, :] += bias over M rows of C columns (the q/k/v biases of Qwen2, after the GEMM).
// out: [M, C]; bias: [C].
void add_bias(float* out, const float* bias, int64_t m, int64_t c);

// dbias[j] += sum over rows of dout[m, j] (the bias gradient). dout: [M, C]; dbias: [C].
// Each column is summed in double in row order and added to dbias once, so the result is
// accurate for M in the millions and the same bits for any number of threads.
void bias_backward(float* dbias, const float* dout, int64_t m, int64_t c);

}  // namespace ll::cpu
