// AdamW on the GPU (see adamw.cuh): argument checks and the launch on a stream. The kernel and
// its launch sequence are in adamw_kernels.cuh.
#include "common/error.h"
#include "kernels/cuda/adamw.cuh"
#include "kernels/cuda/adamw_kernels.cuh"
#include "kernels/cuda/kernel_launch.cuh"

namespace ll::cuda {

void adamw_step(float* master, const float* grad, float* m, float* v, __nv_bfloat16* param,
                int64_t n, const AdamWStep& step, cudaStream_t stream) {
  LL_CHECK(step.step >= 1, "adamw (cuda): step numbers start at 1 (bias correction), got {}",
           step.step);
  LL_CHECK(n >= 0, "adamw (cuda): negative element count {}", n);
  if (n == 0) return;
  adamw_dev::run_adamw_step(StreamLauncher{stream}, master, grad, m, v, param, n, step);
}

}  // namespace ll::cuda
