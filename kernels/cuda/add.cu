// Elementwise in-place add on the GPU (see add.cuh): argument checks and the launch on a
// stream. The kernel and its launch sequence are in add_kernels.cuh.
#include <cstdint>

#include "common/error.h"
#include "kernels/cuda/add.cuh"
#include "kernels/cuda/add_kernels.cuh"
#include "kernels/cuda/kernel_launch.cuh"

namespace ll::cuda {

namespace {

void check_args(const char* op, const void* x, const void* y, int64_t n) {
  LL_CHECK(n >= 0, "{} (cuda): negative element count {}", op, n);
  if (n == 0) return;
  LL_CHECK(x != nullptr && y != nullptr, "{} (cuda): null pointer", op);
}

}  // namespace

void add_inplace_bf16(__nv_bfloat16* x, const __nv_bfloat16* y, int64_t n, cudaStream_t stream) {
  check_args("add_inplace_bf16", x, y, n);
  if (n == 0) return;
  add_dev::run_add_inplace_bf16(StreamLauncher{stream}, x, y, n);
}

void add_inplace_f32(float* x, const float* y, int64_t n, cudaStream_t stream) {
  check_args("add_inplace_f32", x, y, n);
  if (n == 0) return;
  add_dev::run_add_inplace_f32(StreamLauncher{stream}, x, y, n);
}

}  // namespace ll::cuda
