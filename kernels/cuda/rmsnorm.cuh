#pragma once
// RMSNorm on the GPU: bf16 activations and weight, fp32 math, fp32 rstd and dweight.
// Same semantics as ll::cpu::rmsnorm_forward / rmsnorm_backward (kernels/cpu/rmsnorm.h).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace ll::cuda {

// out[n, :] = bf16(weight * (x[n, :] * rstd[n])), rstd[n] = 1 / sqrt(mean(x[n, :]^2) + eps).
// out, x: [N, D] bf16; weight: [D] bf16; rstd: [N] fp32 or null. out may alias x.
// The mean of squares is accumulated in fp32 (the CPU reference uses double).
void rmsnorm_forward(__nv_bfloat16* out, float* rstd, const __nv_bfloat16* x,
                     const __nv_bfloat16* weight, int64_t n_rows, int64_t dim, float eps,
                     cudaStream_t stream);

// Bytes of scratch rmsnorm_backward needs for dweight (0 when dweight is null is also fine:
// the scratch is then unused). Depends only on the shape.
size_t rmsnorm_backward_scratch_bytes(int64_t n_rows, int64_t dim);

// dx [N, D] bf16 += d/dx (read, add in fp32, rounded once to bf16);
// dweight [D] fp32 += sum over rows of dout * x * rstd, skipped when null.
// dout, x: [N, D] bf16; weight [D] bf16; rstd [N] fp32 from the forward.
// dweight is deterministic: per-chunk-of-rows partial sums in `scratch`
// (rmsnorm_backward_scratch_bytes, fp32, device), then a fixed-order sum over the chunks;
// the chunking depends only on (n_rows, dim). scratch may be null: the launcher then takes
// it with cudaMallocAsync / cudaFreeAsync on `stream`. dx must not alias dout or x.
void rmsnorm_backward(__nv_bfloat16* dx, float* dweight, const __nv_bfloat16* dout,
                      const __nv_bfloat16* x, const __nv_bfloat16* weight, const float* rstd,
                      int64_t n_rows, int64_t dim, float* scratch, cudaStream_t stream);

}  // namespace ll::cuda
