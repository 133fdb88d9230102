#pragma once
// Compiles CUDA device code as host C++ for the SIMT emulator (simt_emulator.h): include this
// before any kernel header in a host translation unit. It maps the execution-space and
// shared-memory qualifiers, the built-in index variables, __syncthreads(_and/_or/_count) /
// __syncwarp / __shfl_xor_sync, __cvta_generic_to_shared and the few device intrinsics the
// kernels use onto the emulator, and defines LL_SIMT_EMULATOR_DEVICE_CODE, which makes
// kernels/cuda/dynamic_smem.cuh and kernels/cuda/tc_ptx.cuh call the emulator instead of
// declaring extern shared memory or emitting inline PTX. Host compilers only.
#if defined(__CUDACC__)
#error "tests/cuda_emu/cuda_prelude.h is for host compilers; nvcc compiles the real kernels"
#endif

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "tests/cuda_emu/simt_emulator.h"

#define LL_SIMT_EMULATOR_DEVICE_CODE 1

// CUDA's host_defines.h maps these to nothing for host compilers. A kernel gets internal
// linkage: a translation unit's emulated kernels then never collide with the host stubs nvcc
// emits for the same kernels in the real CUDA library (same mangled names), nor with another
// translation unit's copy. __shared__ must be one object per block: blocks run one after
// another, so a function-local static is that.
// Device code type-puns freely (uint4 <-> __nv_bfloat162 and the like), which nvcc allows:
// every host translation unit compiled with this prelude also needs -fno-strict-aliasing (the
// CMake targets that use it set it).
#undef __global__
#define __global__ [[maybe_unused]] static
#undef __shared__
#define __shared__ static
#undef __launch_bounds__
#define __launch_bounds__(...)
#undef __grid_constant__
#define __grid_constant__

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
requires(sizeof(T) == 8) inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask) {
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

// sin(pi x), cos(pi x) in double, as the device's (correctly rounded within 1 ulp) sincospi.
inline void sincospi(double x, double* s, double* c) {
  // Reduce first so large arguments stay exact: pi x mod 2 pi.
  const double r = std::remainder(x, 2.0);
  *s = std::sin(M_PI * r);
  *c = std::cos(M_PI * r);
}
inline void sincospif(float x, float* s, float* c) {
  double sd, cd;
  sincospi(double(x), &sd, &cd);
  *s = float(sd);
  *c = float(cd);
}

inline float __uint_as_float(unsigned u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline size_t __cvta_generic_to_shared(const void* p) { return ::ll::cuda::emu::shared_address(p); }

// Atomics: fibers never interleave inside one, so a plain read-modify-write is atomic.
template <typename T>
inline T __ll_emu_atomic(T* p, T v, T (*op)(T, T)) {
  const T old = *p;
  *p = op(old, v);
  return old;
}
inline int atomicOr(int* p, int v) {
  return __ll_emu_atomic<int>(p, v, [](int a, int b) { return a | b; });
}
inline unsigned atomicOr(unsigned* p, unsigned v) {
  return __ll_emu_atomic<unsigned>(p, v, [](unsigned a, unsigned b) { return a | b; });
}
inline int atomicAdd(int* p, int v) {
  return __ll_emu_atomic<int>(p, v, [](int a, int b) { return a + b; });
}
inline unsigned atomicAdd(unsigned* p, unsigned v) {
  return __ll_emu_atomic<unsigned>(p, v, [](unsigned a, unsigned b) { return a + b; });
}
inline float atomicAdd(float* p, float v) {
  return __ll_emu_atomic<float>(p, v, [](float a, float b) { return a + b; });
}
// sm_90's vector atomic add (global memory): each component added on its own.
inline float2 atomicAdd(float2* p, float2 v) {
  return __ll_emu_atomic<float2>(p, v, [](float2 a, float2 b) {
    return float2{a.x + b.x, a.y + b.y};
  });
}
inline int atomicMax(int* p, int v) {
  return __ll_emu_atomic<int>(p, v, [](int a, int b) { return a > b ? a : b; });
}
inline int atomicMin(int* p, int v) {
  return __ll_emu_atomic<int>(p, v, [](int a, int b) { return a < b ? a : b; });
}
inline long long atomicMin(long long* p, long long v) {
  return __ll_emu_atomic<long long>(p, v, [](long long a, long long b) { return a < b ? a : b; });
}
inline unsigned long long atomicMin(unsigned long long* p, unsigned long long v) {
  return __ll_emu_atomic<unsigned long long>(
      p, v, [](unsigned long long a, unsigned long long b) { return a < b ? a : b; });
}
inline int atomicExch(int* p, int v) {
  return __ll_emu_atomic<int>(p, v, [](int, int b) { return b; });
}
inline int atomicCAS(int* p, int compare, int v) {
  const int old = *p;
  if (old == compare) *p = v;
  return old;
}

// Device code calls these unqualified.
using std::isfinite;
using std::isinf;
using std::isnan;
using std::max;
using std::min;
