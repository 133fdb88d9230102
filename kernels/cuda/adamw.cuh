#pragma once
// AdamW on the GPU over fp32 master weights, gradients and moments, writing the bf16 copy of
// the parameters the forward uses. The update is ll::adamw_update's (optim/adamw.h) operation
// by operation; results agree with the CPU to the last bit (device sqrtf and division are
// correctly rounded, and every product the CPU rounds separately is rounded separately here).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "optim/adamw.h"

namespace ll::cuda {

// master, grad, m, v: [n] fp32 (device); param: [n] bf16 = bf16(updated master), or null to
// skip. master, m, v are updated in place; grad is only read (scaled by step.grad_scale).
void adamw_step(float* master, const float* grad, float* m, float* v, __nv_bfloat16* param,
                int64_t n, const AdamWStep& step, cudaStream_t stream);

}  // namespace ll::cuda
