#pragma once
// SwiGLU forward / backward kernels (see swiglu.cuh) and their host launch sequences.
// Internal: included by swiglu.cu (nvcc) and by the SIMT emulator tests
// (tests/kernels/cuda/emu), which run the same kernels and sequences.
//
// Grid-stride loops over pieces of V elements: V = 8 (16-byte loads and stores) when every
// pointer is 16-byte aligned, else V = 1; a ragged last piece is done element by element.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "kernels/cuda/bf16_vector_device.cuh"

namespace ll::cuda::swiglu_dev {

using detail::bf16;
using detail::load_bf16;
using detail::store_bf16;

constexpr int kThreads = 256;

// No __restrict__: out may alias the inputs. Each thread reads all inputs of its elements
// before writing them, which is what makes the aliasing safe.
template <int V>
__global__ void __launch_bounds__(kThreads)
    swiglu_forward_kernel(bf16* out, const bf16* gate, const bf16* up, int64_t n) {
  const int64_t n_vec = (n + V - 1) / V;
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < n_vec; i += stride) {
    const int64_t base = i * V;
    if (base + V <= n) {
      float g[V], u[V];
      load_bf16<V>(gate + base, g);
      load_bf16<V>(up + base, u);
#pragma unroll
      for (int k = 0; k < V; ++k) g[k] = g[k] / (1.0f + expf(-g[k])) * u[k];
      store_bf16<V>(out + base, g);
    } else {
      for (int64_t e = base; e < n; ++e) {
        const float g = __bfloat162float(gate[e]);
        const float u = __bfloat162float(up[e]);
        out[e] = __float2bfloat16_rn(g / (1.0f + expf(-g)) * u);
      }
    }
  }
}

__device__ __forceinline__ void swiglu_grad(float go, float g, float u, float& dg, float& du) {
  // exp(-g) = inf gives s = 0: a zero dgate and dup = -0, not NaN.
  const float e = 1.0f + expf(-g);
  const float s = 1.0f / e;
  dg = go * u * (s * (1.0f + g * (1.0f - s)));
  du = go * (g / e);
}

template <int V>
__global__ void __launch_bounds__(kThreads)
    swiglu_backward_kernel(bf16* dgate, bf16* dup, const bf16* dout, const bf16* gate,
                           const bf16* up, int64_t n) {
  const int64_t n_vec = (n + V - 1) / V;
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < n_vec; i += stride) {
    const int64_t base = i * V;
    if (base + V <= n) {
      float go[V], g[V], u[V];
      load_bf16<V>(dout + base, go);
      load_bf16<V>(gate + base, g);
      load_bf16<V>(up + base, u);
#pragma unroll
      for (int k = 0; k < V; ++k) swiglu_grad(go[k], g[k], u[k], g[k], u[k]);
      store_bf16<V>(dgate + base, g);
      store_bf16<V>(dup + base, u);
    } else {
      for (int64_t e = base; e < n; ++e) {
        float dg, du;
        swiglu_grad(__bfloat162float(dout[e]), __bfloat162float(gate[e]), __bfloat162float(up[e]),
                    dg, du);
        dgate[e] = __float2bfloat16_rn(dg);
        dup[e] = __float2bfloat16_rn(du);
      }
    }
  }
}

// out, gate, up: [n] (n >= 1). One launch.
template <typename Launcher>
void run_swiglu_forward(const Launcher& launch, bf16* out, const bf16* gate, const bf16* up,
                        int64_t n) {
  using host_detail::aligned16;
  using host_detail::grid_for;
  if (aligned16(out) && aligned16(gate) && aligned16(up)) {
    constexpr int V = detail::kVec;
    launch("swiglu_forward_kernel", swiglu_forward_kernel<V>,
           dim3(grid_for(host_detail::ceil_div(n, V), kThreads)), dim3(kThreads), size_t(0), out,
           gate, up, n);
  } else {
    launch("swiglu_forward_kernel", swiglu_forward_kernel<1>, dim3(grid_for(n, kThreads)),
           dim3(kThreads), size_t(0), out, gate, up, n);
  }
}

// dgate, dup, dout, gate, up: [n] (n >= 1). One launch.
template <typename Launcher>
void run_swiglu_backward(const Launcher& launch, bf16* dgate, bf16* dup, const bf16* dout,
                         const bf16* gate, const bf16* up, int64_t n) {
  using host_detail::aligned16;
  using host_detail::grid_for;
  if (aligned16(dgate) && aligned16(dup) && aligned16(dout) && aligned16(gate) && aligned16(up)) {
    constexpr int V = detail::kVec;
    launch("swiglu_backward_kernel", swiglu_backward_kernel<V>,
           dim3(grid_for(host_detail::ceil_div(n, V), kThreads)), dim3(kThreads), size_t(0), dgate,
           dup, dout, gate, up, n);
  } else {
    launch("swiglu_backward_kernel", swiglu_backward_kernel<1>, dim3(grid_for(n, kThreads)),
           dim3(kThreads), size_t(0), dgate, dup, dout, gate, up, n);
  }
}

}  // namespace ll::cuda::swiglu_dev
