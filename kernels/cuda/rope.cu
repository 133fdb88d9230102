// Rotary position embedding on the GPU (see rope.cuh): argument checks and the launch on a
// stream. The kernel and its launch sequences are in rope_kernels.cuh.
#include <cmath>

#include "common/error.h"
#include "kernels/cuda/kernel_launch.cuh"
#include "kernels/cuda/rope.cuh"
#include "kernels/cuda/rope_kernels.cuh"

namespace ll::cuda {

namespace {

using detail::bf16;

void check_rope_args(const char* op, int64_t n_tokens, int64_t n_heads, int64_t head_dim,
                     const RopeFrequencies& freqs) {
  LL_CHECK(n_tokens >= 0 && n_heads >= 0, "{}: negative size (tokens {}, heads {})", op, n_tokens,
           n_heads);
  LL_CHECK(head_dim >= 2 && head_dim % 2 == 0 && head_dim <= kRopeMaxHeadDim,
           "{}: head_dim {} must be even, >= 2 and <= {}", op, head_dim, kRopeMaxHeadDim);
  LL_CHECK(int64_t(freqs.inv_freq.size()) == head_dim / 2,
           "{}: {} frequencies for head_dim {} (need head_dim / 2)", op, freqs.inv_freq.size(),
           head_dim);
  LL_CHECK(std::isfinite(freqs.attention_scaling) && freqs.attention_scaling > 0.0f,
           "{}: attention scaling {} must be a finite number > 0", op, freqs.attention_scaling);
}

}  // namespace

void rope_forward(bf16* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim,
                  int64_t position_offset, const RopeFrequencies& freqs, cudaStream_t stream) {
  check_rope_args("rope (cuda)", n_tokens, n_heads, head_dim, freqs);
  if (n_tokens == 0 || n_heads == 0) return;
  rope_dev::run_rope_forward(StreamLauncher{stream}, x, n_tokens, n_heads, head_dim,
                             position_offset, freqs);
}

void rope_backward(bf16* dx, int64_t n_tokens, int64_t n_heads, int64_t head_dim,
                   int64_t position_offset, const RopeFrequencies& freqs, cudaStream_t stream) {
  check_rope_args("rope_backward (cuda)", n_tokens, n_heads, head_dim, freqs);
  if (n_tokens == 0 || n_heads == 0) return;
  rope_dev::run_rope_backward(StreamLauncher{stream}, dx, n_tokens, n_heads, head_dim,
                              position_offset, freqs);
}

}  // namespace ll::cuda
