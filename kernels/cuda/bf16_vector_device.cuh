#pragma once
// Device helpers shared by the elementwise / normalization kernels (rmsnorm, swiglu,
// embedding, convert, adamw, reduce). Internal: included by .cu files only.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace ll::cuda::detail {

using bf16 = __nv_bfloat16;

// bf16 elements per 16-byte vector access.
constexpr int kVec = 8;

// Loads V bf16 values as fp32. V == 8 needs p 16-byte aligned.
template <int V>
__device__ __forceinline__ void load_bf16(const bf16* p, float (&f)[V]) {
  if constexpr (V == 8) {
    const uint4 raw = *reinterpret_cast<const uint4*>(p);
    const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const float2 t = __bfloat1622float2(h[k]);
      f[2 * k] = t.x;
      f[2 * k + 1] = t.y;
    }
  } else {
#pragma unroll
    for (int k = 0; k < V; ++k) f[k] = __bfloat162float(p[k]);
  }
}

// Stores V fp32 values rounded to bf16 (round to nearest even).
template <int V>
__device__ __forceinline__ void store_bf16(bf16* p, const float (&f)[V]) {
  if constexpr (V == 8) {
    uint4 raw;
    __nv_bfloat162* h = reinterpret_cast<__nv_bfloat162*>(&raw);
#pragma unroll
    for (int k = 0; k < 4; ++k) h[k] = __floats2bfloat162_rn(f[2 * k], f[2 * k + 1]);
    *reinterpret_cast<uint4*>(p) = raw;
  } else {
#pragma unroll
    for (int k = 0; k < V; ++k) p[k] = __float2bfloat16_rn(f[k]);
  }
}

// Sum over the block, the same order every run (warp butterflies, then warp 0 over the warp
// sums); every thread gets the total. red: __shared__ [32]. Ends with a barrier so red can
// be reused right away.
template <int kThreads, typename T>
__device__ __forceinline__ T block_sum(T v, T* red) {
  static_assert(kThreads % 32 == 0 && kThreads <= 1024, "block size");
  constexpr int kWarps = kThreads / 32;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
  if (lane == 0) red[warp] = v;
  __syncthreads();
  T t = lane < kWarps ? red[lane] : T(0);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) t += __shfl_xor_sync(0xffffffffu, t, o);
  __syncthreads();
  return t;
}

}  // namespace ll::cuda::detail

namespace ll::cuda::host_detail {

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Blocks for a grid-stride loop over `work` items with `threads` per block (at least 1,
// capped; the kernels loop over the rest).
inline unsigned grid_for(int64_t work, int threads) {
  const int64_t blocks = ceil_div(work, threads);
  const int64_t cap = int64_t(1) << 20;
  return unsigned(blocks < 1 ? 1 : (blocks > cap ? cap : blocks));
}

}  // namespace ll::cuda::host_detail
