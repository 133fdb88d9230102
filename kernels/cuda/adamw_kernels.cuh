#pragma once
// AdamW kernel (see adamw.cuh) and its host launch sequence. Internal: included by adamw.cu
// (nvcc) and by the SIMT emulator tests (tests/kernels/cuda/emu, host compiler after
// tests/cuda_emu/cuda_prelude.h), which run the same kernel and sequence.
//
// One grid-stride loop, one thread per element: the scalars of the step are rounded to fp32 on
// the host exactly as optim/adamw.cpp rounds them, and the update is adamw.cpp's operation by
// operation (every product it rounds on its own is rounded on its own here).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "kernels/cuda/bf16_vector_device.cuh"
#include "optim/adamw.h"

namespace ll::cuda::adamw_dev {

constexpr int kThreads = 256;

// The scalars of one step, rounded to fp32 on the host exactly as adamw.cpp rounds them.
struct AdamWScalars {
  float decay;
  float lerp_weight;
  float beta2;
  float one_minus_beta2;
  float bias_correction2_sqrt;
  float eps;
  float neg_step_size;
  float grad_scale;
  int apply_decay;
  int scale_grad;
};

// __fmul_rn where adamw.cpp rounds a product on its own: it stops nvcc from contracting the
// product into a following add (p * decay + update would become one fma otherwise).
__global__ void __launch_bounds__(kThreads)
    adamw_kernel(float* master, const float* grad, float* m, float* v, __nv_bfloat16* param,
                 int64_t n, const AdamWScalars s) {
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < n; i += stride) {
    const float g = s.scale_grad ? __fmul_rn(s.grad_scale, grad[i]) : grad[i];
    float p = master[i];
    if (s.apply_decay) p = __fmul_rn(p, s.decay);
    const float mo = m[i];
    const float mi = fmaf(s.lerp_weight, __fsub_rn(g, mo), mo);
    const float vi = fmaf(__fmul_rn(s.one_minus_beta2, g), g, __fmul_rn(v[i], s.beta2));
    const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), s.bias_correction2_sqrt), s.eps);
    const float updated = __fadd_rn(p, __fdiv_rn(__fmul_rn(s.neg_step_size, mi), denom));
    master[i] = updated;
    m[i] = mi;
    v[i] = vi;
    if (param != nullptr) param[i] = __float2bfloat16_rn(updated);
  }
}

// Exactly adamw.cpp's host-side scalars.
inline AdamWScalars adamw_scalars(const AdamWStep& step) {
  const AdamWConfig& c = step.config;
  const double bias_correction1 = 1.0 - std::pow(c.beta1, double(step.step));
  const double bias_correction2 = 1.0 - std::pow(c.beta2, double(step.step));
  const double step_size = step.lr / bias_correction1;
  AdamWScalars s{};
  s.decay = float(1.0 - step.lr * c.weight_decay);
  s.apply_decay = c.weight_decay != 0.0 ? 1 : 0;
  s.lerp_weight = float(1.0 - c.beta1);
  s.beta2 = float(c.beta2);
  s.one_minus_beta2 = float(1.0 - c.beta2);
  s.bias_correction2_sqrt = float(std::sqrt(bias_correction2));
  s.eps = float(c.eps);
  s.neg_step_size = float(-step_size);
  s.grad_scale = step.grad_scale;
  s.scale_grad = step.grad_scale != 1.0f ? 1 : 0;
  return s;
}

// The launch sequence of adamw_step after its argument checks (step.step >= 1, n >= 1).
template <typename Launcher>
void run_adamw_step(const Launcher& launch, float* master, const float* grad, float* m, float* v,
                    __nv_bfloat16* param, int64_t n, const AdamWStep& step) {
  launch("adamw_kernel", adamw_kernel, dim3(host_detail::grid_for(n, kThreads)), dim3(kThreads),
         size_t(0), master, grad, m, v, param, n, adamw_scalars(step));
}

}  // namespace ll::cuda::adamw_dev
