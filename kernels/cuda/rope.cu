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
                     double scale, double theta) {
  LL_CHECK(n_tokens >= 0 && n_heads >= 0, "{}: negative size (tokens {}, heads {})", op, n_tokens,
           n_heads);
  LL_CHECK(head_dim >= 2 && head_dim % 2 == 0 && head_dim <= kRopeMaxHeadDim,
           "{}: head_dim {} must be even, >= 2 and <= {}", op, head_dim, kRopeMaxHeadDim);
  LL_CHECK(scale > 0.0 && std::isfinite(scale), "{}: position scale {} must be > 0", op, scale);
  LL_CHECK(theta > 0.0 && std::isfinite(theta), "{}: theta {} must be > 0", op, theta);
}

}  // namespace

void rope_forward(bf16* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim,
                  int64_t position_offset, double scale, double theta, cudaStream_t stream) {
  check_rope_args("rope (cuda)", n_tokens, n_heads, head_dim, scale, theta);
  if (n_tokens == 0 || n_heads == 0) return;
  rope_dev::run_rope_forward(StreamLauncher{stream}, x, n_tokens, n_heads, head_dim,
                             position_offset, scale, theta);
}

void rope_backward(bf16* dx, int64_t n_tokens, int64_t n_heads, int64_t head_dim,
                   int64_t position_offset, double scale, double theta, cudaStream_t stream) {
  check_rope_args("rope_backward (cuda)", n_tokens, n_heads, head_dim, scale, theta);
  if (n_tokens == 0 || n_heads == 0) return;
  rope_dev::run_rope_backward(StreamLauncher{stream}, dx, n_tokens, n_heads, head_dim,
                              position_offset, scale, theta);
}

}  // namespace ll::cuda
