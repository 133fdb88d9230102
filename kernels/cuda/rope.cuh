#pragma once
// Rotary position embedding on the GPU, in place on bf16 [N, heads, hd]. Same semantics as
// ll::cpu::rope_forward / rope_backward (kernels/cpu/rope.h).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/rope_scaling.h"

namespace ll::cuda {

// Largest head_dim the kernels take (the per-pair frequencies travel as a kernel argument).
inline constexpr int64_t kRopeMaxHeadDim = 512;

// Rotate-half pairs (j, j + hd/2); token n at position p = position_offset + n, pair j by the
// fp32 angle float(p) * freqs.inv_freq[j] (the host's frequencies, kernels/rope_scaling.h,
// travel as a kernel argument, so the angles are bit-identical to the CPU reference's); cos/sin
// are taken in double (as sincospi of angle * (1/pi) in double, to avoid the local-memory slow
// path of double sin/cos; the argument error is ~|angle| * 2e-16, far below an fp32 ulp of the
// result), rounded to fp32 and multiplied by freqs.attention_scaling in fp32, as the CPU does.
// x is read and written as bf16, the rotation in fp32.
void rope_forward(__nv_bfloat16* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim,
                  int64_t position_offset, const RopeFrequencies& freqs, cudaStream_t stream);

// Backward: rotate dx [N, heads, hd] by the negative angles (same scaling), in place.
void rope_backward(__nv_bfloat16* dx, int64_t n_tokens, int64_t n_heads, int64_t head_dim,
                   int64_t position_offset, const RopeFrequencies& freqs, cudaStream_t stream);

}  // namespace ll::cuda
