#pragma once
// Compiles CUDA device code as host C++ for the SIMT emulator (simt_emulator.h): include this
// before any kernel header in a host translation unit. It maps the execution-space and
// shared-memory qualifiers, the built-in index variables, __syncthreads(_and/_or/_count) /
// __syncwarp / __shfl_xor_sync, __cvta_generic_to_shared and the few device intrinsics the
// kernels use onto the emulator, and defines LL_CUDA_EMULATION, which makes
// kernels/cuda/dynamic_smem.cuh and kernels/cuda/tc_ptx.cuh call the emulator instead of
// declaring extern shared memory or emitting inline PTX. Host compilers only.
#if defined(__CUDACC__)
#error "kernels/cuda/emu/cuda_prelude.h is for host compilers; nvcc compiles the real kernels"
#endif

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/cuda/emu/simt_emulator.h"

#define LL_CUDA_EMULATION 1

// CUDA's host_defines.h maps these to nothing for host compilers; __shared__ must instead be
// one object per block: blocks run one after another, so a function-local static is that.
#undef __shared__
#define __shared__ static
#undef __launch_bounds__
#define __launch_bounds__(...)

#define threadIdx (::ll::cuda::emu::thread_idx())
#define blockIdx (::ll::cuda::emu::block_idx())
#define blockDim (::ll::cuda::emu::block_dim())
#define gridDim (::ll::cuda::emu::grid_dim())

inline void __syncthreads() { ::ll::cuda::emu::sync_threads(); }
inline int __syncthreads_and(int p) {
  return ::ll::cuda::emu::sync_threads_reduce(p, ::ll::cuda::emu::BarrierReduce::And);
}
inline int __syncthreads_or(int p) {
  return ::ll::cuda::emu::sync_threads_reduce(p, ::ll::cuda::emu::BarrierReduce::Or);
}
inline int __syncthreads_count(int p) {
  return ::ll::cuda::emu::sync_threads_reduce(p, ::ll::cuda::emu::BarrierReduce::Count);
}
inline void __syncwarp(unsigned = 0xffffffffu) { ::ll::cuda::emu::sync_warp(); }

inline int __shfl_xor_sync(unsigned mask, int v, int lane_mask) {
  return int(::ll::cuda::emu::shfl_xor(uint32_t(v), mask, lane_mask));
}
inline unsigned __shfl_xor_sync(unsigned mask, unsigned v, int lane_mask) {
  return ::ll::cuda::emu::shfl_xor(v, mask, lane_mask);
}
inline float __shfl_xor_sync(unsigned mask, float v, int lane_mask) {
  uint32_t u;
  std::memcpy(&u, &v, 4);
  u = ::ll::cuda::emu::shfl_xor(u, mask, lane_mask);
  std::memcpy(&v, &u, 4);
  return v;
}
// 64-bit values: two 32-bit shuffles, as the device library does.
template <typename T>
  requires(sizeof(T) == 8)
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask) {
  uint32_t w[2];
  std::memcpy(w, &v, 8);
  w[0] = ::ll::cuda::emu::shfl_xor(w[0], mask, lane_mask);
  w[1] = ::ll::cuda::emu::shfl_xor(w[1], mask, lane_mask);
  std::memcpy(&v, w, 8);
  return v;
}

// IEEE round-to-nearest float arithmetic (the host's default; no FMA contraction on x86-64).
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }

inline float __uint_as_float(unsigned u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline size_t __cvta_generic_to_shared(const void* p) { return ::ll::cuda::emu::shared_address(p); }

// Device code calls min / max on ints unqualified.
using std::max;
using std::min;
