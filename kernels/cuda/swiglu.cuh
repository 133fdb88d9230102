#pragma once
// SwiGLU on the GPU: bf16 storage, fp32 math. Same semantics and aliasing rules as
// ll::cpu::swiglu_forward / swiglu_backward (kernels/cpu/swiglu.h).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace ll::cuda {

// out = bf16(silu(gate) * up) over n elements. out may alias gate or up.
void swiglu_forward(__nv_bfloat16* out, const __nv_bfloat16* gate, const __nv_bfloat16* up,
                    int64_t n, cudaStream_t stream);

// dgate = dout * up * s * (1 + g * (1 - s)), dup = dout * silu(g), s = sigmoid(g), both
// overwritten (n elements). dgate may alias gate and dup may alias up; neither may alias dout.
void swiglu_backward(__nv_bfloat16* dgate, __nv_bfloat16* dup, const __nv_bfloat16* dout,
                     const __nv_bfloat16* gate, const __nv_bfloat16* up, int64_t n,
                     cudaStream_t stream);

}  // namespace ll::cuda
