#pragma once
// Linear-layer bias on the GPU (Qwen2's q/k/v biases): the add after the GEMM and its
// gradient. Same semantics as ll::cpu::add_bias / bias_backward (kernels/cpu/bias.h).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace ll::cuda {

// out[r, :] += bias over rows r < M: out [M, C] bf16; bias [C] bf16 or fp32. fp32 add, rounded
// once to bf16 (nearest even). 16-byte accesses when C % 8 == 0 and out and bias are 16-byte
// aligned, element by element otherwise. M == 0 or C == 0 does nothing. Device pointers.
void add_bias(__nv_bfloat16* out, const __nv_bfloat16* bias, int64_t rows, int64_t cols,
              cudaStream_t stream);
void add_bias(__nv_bfloat16* out, const float* bias, int64_t rows, int64_t cols,
              cudaStream_t stream);

// Bytes of scratch bias_backward needs (per-chunk partial column sums); depends only on the
// shape, 0 when there is nothing to sum.
size_t bias_backward_scratch_bytes(int64_t rows, int64_t cols);

// dbias[j] (fp32) += sum over rows of dout[r, j] (dout [M, C] bf16), summed in double and
// rounded once. Deterministic, no atomics: each chunk of rows is summed in row order into
// `scratch` (bias_backward_scratch_bytes, device), then the chunks in order; the chunking
// depends only on M. scratch may be null: it is then taken with cudaMallocAsync /
// cudaFreeAsync on `stream`. M == 0 or C == 0 does nothing.
void bias_backward(float* dbias, const __nv_bfloat16* dout, int64_t rows, int64_t cols,
                   double* scratch, cudaStream_t stream);

}  // namespace ll::cuda
