#pragma once
// Rotary position embedding kernel (see rope.cuh) and its host launch sequences. Internal:
// included by rope.cu (nvcc) and by the SIMT emulator tests (tests/kernels/cuda/emu), which
// run the same kernel and sequences.
//
// The per-pair frequencies and the attention scaling are computed on the host
// (kernels/rope_scaling.h, as for the CPU reference) and travel as a kernel argument.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels/cuda/bf16_vector_device.cuh"
#include "kernels/cuda/rope.cuh"

namespace ll::cuda::rope_dev {

using detail::bf16;

constexpr int kThreads = 128;
constexpr int kMaxHalf = int(kRopeMaxHeadDim / 2);

struct RopeFreqs {
  float inv_freq[kMaxHalf];  // [hd/2], the first `half` used
  float attention_scaling;   // cos and sin are multiplied by it (fp32, after rounding)
};

// One block per token (grid-stride over tokens): cos/sin of the token's angles into shared
// memory, then every (head, pair) of the token rotated. x: [n_tokens, n_heads, 2 * half].
__global__ void __launch_bounds__(kThreads)
    rope_kernel(bf16* x, int64_t n_tokens, int64_t n_heads, int half, int64_t position_offset,
                float sin_sign, const RopeFreqs freqs) {
  __shared__ float cs[kMaxHalf], sn[kMaxHalf];
  constexpr double kInvPi = 0.31830988618379067154;
  for (int64_t n = blockIdx.x; n < n_tokens; n += gridDim.x) {
    const float pos = float(position_offset + n);  // round to nearest, as the CPU's float()
    for (int j = int(threadIdx.x); j < half; j += kThreads) {
      const float angle = __fmul_rn(pos, freqs.inv_freq[j]);
      double s, c;
      sincospi(double(angle) * kInvPi, &s, &c);
      // transformers: emb.cos() * attention_scaling, in fp32.
      cs[j] = __fmul_rn(float(c), freqs.attention_scaling);
      sn[j] = sin_sign * __fmul_rn(float(s), freqs.attention_scaling);  // R(-a) = R(a)^T
    }
    __syncthreads();
    bf16* xt = x + n * n_heads * 2 * half;  // [heads, hd]
    const int64_t pairs = n_heads * half;
    for (int64_t idx = threadIdx.x; idx < pairs; idx += kThreads) {
      const int64_t h = idx / half;
      const int j = int(idx - h * half);
      bf16* xh = xt + h * 2 * half;  // [hd]
      const float x1 = __bfloat162float(xh[j]);
      const float x2 = __bfloat162float(xh[j + half]);
      const float c = cs[j], s = sn[j];
      // HF: q * cos + rotate_half(q) * sin, rotate_half(q) = cat(-q2, q1).
      xh[j] = __float2bfloat16_rn(x1 * c + (-x2) * s);
      xh[j + half] = __float2bfloat16_rn(x2 * c + x1 * s);
    }
    __syncthreads();  // cs/sn are rewritten for the next token
  }
}

// x: [n_tokens, n_heads, head_dim] (sizes checked by the caller, n_tokens, n_heads >= 1).
// sin_sign -1 rotates by the negative angles (the backward).
template <typename Launcher>
void run_rope_rotation(const Launcher& launch, bf16* x, int64_t n_tokens, int64_t n_heads,
                       int64_t head_dim, int64_t position_offset, const RopeFrequencies& host,
                       float sin_sign) {
  // The host's fp32 inv_freq (the CPU reference's), so the device's fp32 angles are
  // bit-identical to the CPU's.
  RopeFreqs freqs{};
  const int64_t half = head_dim / 2;
  for (int64_t j = 0; j < half; ++j) freqs.inv_freq[j] = host.inv_freq[size_t(j)];
  freqs.attention_scaling = host.attention_scaling;
  const unsigned blocks = unsigned(n_tokens < 65536 * 16 ? n_tokens : 65536 * 16);
  launch("rope_kernel", rope_kernel, dim3(blocks), dim3(kThreads), size_t(0), x, n_tokens, n_heads,
         int(half), position_offset, sin_sign, freqs);
}

template <typename Launcher>
void run_rope_forward(const Launcher& launch, bf16* x, int64_t n_tokens, int64_t n_heads,
                      int64_t head_dim, int64_t position_offset, const RopeFrequencies& freqs) {
  run_rope_rotation(launch, x, n_tokens, n_heads, head_dim, position_offset, freqs, 1.0f);
}

template <typename Launcher>
void run_rope_backward(const Launcher& launch, bf16* dx, int64_t n_tokens, int64_t n_heads,
                       int64_t head_dim, int64_t position_offset, const RopeFrequencies& freqs) {
  run_rope_rotation(launch, dx, n_tokens, n_heads, head_dim, position_offset, freqs, -1.0f);
}

}  // namespace ll::cuda::rope_dev
