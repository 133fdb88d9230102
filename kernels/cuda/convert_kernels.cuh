#pragma once
// Conversion and fill kernels (see convert.cuh) and their host launch sequences. Internal:
// included by convert.cu (nvcc) and by the SIMT emulator tests (tests/kernels/cuda/emu, host
// compiler after tests/cuda_emu/cuda_prelude.h), which run the same kernels and sequences.
//
// Each is one grid-stride loop, one element per thread and step, over at most 2^20 blocks of
// 256 threads (host_detail::grid_for).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/bf16_vector_device.cuh"

namespace ll::cuda::convert_dev {

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
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < n; i += stride) out[i] = value;
}

// The launch sequences of convert.cuh's functions after their argument checks (n >= 1).
template <typename Launcher>
void run_convert_f32_to_bf16(const Launcher& launch, bf16* out, const float* in, int64_t n) {
  launch("f32_to_bf16_kernel", f32_to_bf16_kernel, dim3(host_detail::grid_for(n, kThreads)),
         dim3(kThreads), size_t(0), out, in, n);
}

template <typename Launcher>
void run_convert_bf16_to_f32(const Launcher& launch, float* out, const bf16* in, int64_t n) {
  launch("bf16_to_f32_kernel", bf16_to_f32_kernel, dim3(host_detail::grid_for(n, kThreads)),
         dim3(kThreads), size_t(0), out, in, n);
}

template <typename Launcher>
void run_fill_f32(const Launcher& launch, float* out, float value, int64_t n) {
  launch("fill_kernel<float>", fill_kernel<float>, dim3(host_detail::grid_for(n, kThreads)),
         dim3(kThreads), size_t(0), out, value, n);
}

template <typename Launcher>
void run_fill_bf16(const Launcher& launch, bf16* out, float value, int64_t n) {
  launch("fill_kernel<bf16>", fill_kernel<bf16>, dim3(host_detail::grid_for(n, kThreads)),
         dim3(kThreads), size_t(0), out, __float2bfloat16_rn(value), n);
}

}  // namespace ll::cuda::convert_dev
