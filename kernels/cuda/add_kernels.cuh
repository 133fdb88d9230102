#pragma once
// Elementwise in-place add kernel (see add.cuh) and its host launch sequence. Internal:
// included by add.cu (nvcc) and by the SIMT emulator tests (tests/kernels/cuda/emu, host
// compiler after tests/cuda_emu/cuda_prelude.h), which run the same kernel and sequence.
//
// x and y equally misaligned (and element-aligned): the elements before x's first 16-byte
// boundary (the head) and after the last full vector (the tail) are done one by one by the
// first threads of the grid, the 16-byte vectors in between by a grid-stride loop. Otherwise
// every element one by one.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "kernels/cuda/bf16_vector_device.cuh"

namespace ll::cuda::add_dev {

using detail::bf16;

constexpr int kThreads = 256;

__device__ __forceinline__ void add_one(bf16* x, const bf16* y) {
  *x = __float2bfloat16_rn(__bfloat162float(*x) + __bfloat162float(*y));
}
__device__ __forceinline__ void add_one(float* x, const float* y) { *x += *y; }

// 16 bytes at once; x and y 16-byte aligned.
__device__ __forceinline__ void add_vec(bf16* x, const bf16* y) {
  float a[detail::kVec], b[detail::kVec];
  detail::load_bf16<detail::kVec>(x, a);
  detail::load_bf16<detail::kVec>(y, b);
#pragma unroll
  for (int k = 0; k < detail::kVec; ++k) a[k] += b[k];
  detail::store_bf16<detail::kVec>(x, a);
}
__device__ __forceinline__ void add_vec(float* x, const float* y) {
  float4 a = *reinterpret_cast<const float4*>(x);
  const float4 b = *reinterpret_cast<const float4*>(y);
  a.x += b.x;
  a.y += b.y;
  a.z += b.z;
  a.w += b.w;
  *reinterpret_cast<float4*>(x) = a;
}

// Elements [0, head) and those after the last full vector one by one (the first threads of
// the grid), the full V-element vectors in between grid-strided. V == 1: all one by one.
// No __restrict__: x may equal y; each thread reads both before it writes its elements.
template <typename T, int V>
__global__ void __launch_bounds__(kThreads)
    add_inplace_kernel(T* x, const T* y, int64_t n, int head) {
  const int64_t n_vec = (n - head) / V;
  const int64_t tail0 = head + n_vec * V;
  const int64_t gid = int64_t(blockIdx.x) * kThreads + threadIdx.x;
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  for (int64_t i = gid; i < n_vec; i += stride) {
    const int64_t base = head + i * V;
    if constexpr (V == 1) {
      add_one(x + base, y + base);
    } else {
      add_vec(x + base, y + base);
    }
  }
  if constexpr (V > 1) {
    if (gid < head) add_one(x + gid, y + gid);
    if (gid < n - tail0) add_one(x + tail0 + gid, y + tail0 + gid);
  }
}

// The launch sequence of add_inplace_bf16 / add_inplace_f32 after their argument checks
// (n >= 1, x and y not null); T is bf16 or float.
template <typename T, typename Launcher>
void run_add_inplace(const Launcher& launch, T* x, const T* y, int64_t n) {
  constexpr bool kBf16 = std::is_same_v<T, bf16>;
  constexpr int V = int(16 / sizeof(T));
  const uintptr_t ax = reinterpret_cast<uintptr_t>(x), ay = reinterpret_cast<uintptr_t>(y);
  using host_detail::grid_for;
  // Same misalignment (and element-aligned): peel the head, then 16-byte vectors.
  if ((ax & 15u) == (ay & 15u) && ax % sizeof(T) == 0) {
    int64_t head = int64_t((16u - (ax & 15u)) & 15u) / int64_t(sizeof(T));
    if (head > n) head = n;
    // At least one block: kThreads >= V threads cover the head and the tail (< V each).
    launch(kBf16 ? "add_inplace_kernel<bf16, 8>" : "add_inplace_kernel<float, 4>",
           add_inplace_kernel<T, V>, dim3(grid_for((n - head) / V, kThreads)), dim3(kThreads),
           size_t(0), x, y, n, int(head));
  } else {
    launch(kBf16 ? "add_inplace_kernel<bf16, 1>" : "add_inplace_kernel<float, 1>",
           add_inplace_kernel<T, 1>, dim3(grid_for(n, kThreads)), dim3(kThreads), size_t(0), x, y,
           n, 0);
  }
}

template <typename Launcher>
void run_add_inplace_bf16(const Launcher& launch, bf16* x, const bf16* y, int64_t n) {
  run_add_inplace(launch, x, y, n);
}

template <typename Launcher>
void run_add_inplace_f32(const Launcher& launch, float* x, const float* y, int64_t n) {
  run_add_inplace(launch, x, y, n);
}

}  // namespace ll::cuda::add_dev
