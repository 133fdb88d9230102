#include "kernels/cuda/convert.cuh"

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/ew_device.cuh"

namespace ll::cuda {

namespace {

using detail::bf16;

constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads)
    f32_to_bf16_kernel(bf16* out, const float* in, int64_t n) {
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < n; i += stride)
    out[i] = __float2bfloat16_rn(in[i]);
}

__global__ void __launch_bounds__(kThreads)
    bf16_to_f32_kernel(float* out, const bf16* in, int64_t n) {
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < n; i += stride)
    out[i] = __bfloat162float(in[i]);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) fill_kernel(T* out, T value, int64_t n) {
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < n; i += stride)
    out[i] = value;
}

void check_n(const char* op, int64_t n) {
  LL_CHECK(n >= 0, "{} (cuda): negative element count {}", op, n);
}

}  // namespace

void convert_f32_to_bf16(bf16* out, const float* in, int64_t n, cudaStream_t stream) {
  check_n("convert_f32_to_bf16", n);
  if (n == 0) return;
  f32_to_bf16_kernel<<<host_detail::grid_for(n, kThreads), kThreads, 0, stream>>>(out, in, n);
  LL_CUDA_CHECK_LAUNCH();
}

void convert_bf16_to_f32(float* out, const bf16* in, int64_t n, cudaStream_t stream) {
  check_n("convert_bf16_to_f32", n);
  if (n == 0) return;
  bf16_to_f32_kernel<<<host_detail::grid_for(n, kThreads), kThreads, 0, stream>>>(out, in, n);
  LL_CUDA_CHECK_LAUNCH();
}

void fill_f32(float* out, float value, int64_t n, cudaStream_t stream) {
  check_n("fill_f32", n);
  if (n == 0) return;
  fill_kernel<float><<<host_detail::grid_for(n, kThreads), kThreads, 0, stream>>>(out, value, n);
  LL_CUDA_CHECK_LAUNCH();
}

void fill_bf16(bf16* out, float value, int64_t n, cudaStream_t stream) {
  check_n("fill_bf16", n);
  if (n == 0) return;
  fill_kernel<bf16><<<host_detail::grid_for(n, kThreads), kThreads, 0, stream>>>(
      out, __float2bfloat16_rn(value), n);
  LL_CUDA_CHECK_LAUNCH();
}

}  // namespace ll::cuda
