#pragma once
// Elementwise in-place add on the GPU (residual streams, gradient accumulation).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace ll::cuda {

// x[i] += y[i] over n elements: bf16 (fp32 add, rounded once to bf16, nearest even) and fp32
// versions. x must not partially overlap y (x == y is allowed: doubling). Device pointers.
// 16-byte accesses when x and y are equally misaligned (the unaligned head is done element by
// element), element by element otherwise. n == 0 does nothing.
void add_inplace_bf16(__nv_bfloat16* x, const __nv_bfloat16* y, int64_t n, cudaStream_t stream);
void add_inplace_f32(float* x, const float* y, int64_t n, cudaStream_t stream);

}  // namespace ll::cuda
