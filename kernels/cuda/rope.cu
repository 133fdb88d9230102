#include "kernels/cuda/rope.cuh"

#include <cmath>

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/ew_device.cuh"

namespace ll::cuda {

namespace {

using detail::bf16;

constexpr int kThreads = 128;
constexpr int kMaxHalf = int(kRopeMaxHeadDim / 2);

struct RopeFreqs {
  float inv_freq[kMaxHalf];  // [hd/2], the first `half` used
};

// One block per token (grid-stride over tokens): cos/sin of the token's angles into shared
// memory, then every (head, pair) of the token rotated.
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
      cs[j] = float(c);
      sn[j] = sin_sign * float(s);  // R(-a) = R(a)^T for the backward
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

void rope_launch(const char* op, bf16* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim,
                 int64_t position_offset, double scale, double theta, bool transpose,
                 cudaStream_t stream) {
  LL_CHECK(n_tokens >= 0 && n_heads >= 0, "{}: negative size (tokens {}, heads {})", op,
           n_tokens, n_heads);
  LL_CHECK(head_dim >= 2 && head_dim % 2 == 0 && head_dim <= kRopeMaxHeadDim,
           "{}: head_dim {} must be even, >= 2 and <= {}", op, head_dim, kRopeMaxHeadDim);
  LL_CHECK(scale > 0.0 && std::isfinite(scale), "{}: position scale {} must be > 0", op, scale);
  LL_CHECK(theta > 0.0 && std::isfinite(theta), "{}: theta {} must be > 0", op, theta);
  if (n_tokens == 0 || n_heads == 0) return;
  // inv_freq exactly as rope.cpp's rope_inv_freq (host fp32 std::pow), so the fp32 angles
  // on the device are bit-identical to the CPU's.
  RopeFreqs freqs{};
  const int64_t half = head_dim / 2;
  const float base = float(theta);
  const float factor = float(scale);
  for (int64_t j = 0; j < half; ++j) {
    const float exponent = float(2 * j) / float(head_dim);
    float f = 1.0f / std::pow(base, exponent);
    if (factor != 1.0f) f = f / factor;
    freqs.inv_freq[j] = f;
  }
  const unsigned blocks = unsigned(n_tokens < 65536 * 16 ? n_tokens : 65536 * 16);
  rope_kernel<<<blocks, kThreads, 0, stream>>>(x, n_tokens, n_heads, int(half), position_offset,
                                               transpose ? -1.0f : 1.0f, freqs);
  LL_CUDA_CHECK_LAUNCH();
}

}  // namespace

void rope_forward(bf16* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim,
                  int64_t position_offset, double scale, double theta, cudaStream_t stream) {
  rope_launch("rope (cuda)", x, n_tokens, n_heads, head_dim, position_offset, scale, theta,
              false, stream);
}

void rope_backward(bf16* dx, int64_t n_tokens, int64_t n_heads, int64_t head_dim,
                   int64_t position_offset, double scale, double theta, cudaStream_t stream) {
  rope_launch("rope_backward (cuda)", dx, n_tokens, n_heads, head_dim, position_offset, scale,
              theta, true, stream);
}

}  // namespace ll::cuda
