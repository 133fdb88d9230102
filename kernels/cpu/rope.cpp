#include "kernels/cpu/rope.h"

#include <cmath>
#include <vector>

#include "common/error.h"

namespace ll::cpu {

namespace {

void check_rope_args(const char* op, int64_t n_tokens, int64_t n_heads, int64_t head_dim,
                     const RopeFrequencies& freqs) {
  LL_CHECK(n_tokens >= 0 && n_heads >= 0, "{}: negative size (tokens {}, heads {})", op, n_tokens,
           n_heads);
  LL_CHECK(head_dim >= 2 && head_dim % 2 == 0, "{}: head_dim {} must be even and >= 2", op,
           head_dim);
  LL_CHECK(int64_t(freqs.inv_freq.size()) == head_dim / 2,
           "{}: {} frequencies for head_dim {} (need head_dim / 2)", op, freqs.inv_freq.size(),
           head_dim);
  LL_CHECK(std::isfinite(freqs.attention_scaling) && freqs.attention_scaling > 0.0f,
           "{}: attention scaling {} must be a finite number > 0", op, freqs.attention_scaling);
}

// cos and sin [hd/2] of one token's angles, times the attention scaling. Only cos/sin are taken
// in double, then rounded; torch's fp32 (SLEEF) cos/sin are within an ulp of that.
void rope_cos_sin(float* cs, float* sn, const RopeFrequencies& freqs, int64_t position) {
  const float pos = float(position);
  const float scaling = freqs.attention_scaling;
  for (size_t j = 0; j < freqs.inv_freq.size(); ++j) {
    const float angle = pos * freqs.inv_freq[j];
    cs[j] = float(std::cos(double(angle))) * scaling;
    sn[j] = float(std::sin(double(angle))) * scaling;
  }
}

// Rotates every pair (j, j + hd/2) of x [N, heads, hd] by +angle (forward) or -angle (the
// transpose, for backward), in place. Forward and backward share this one function, so they
// use the same angles by construction.
void rope_rotate(float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim,
                 int64_t position_offset, const RopeFrequencies& freqs, bool transpose) {
  const int64_t half = head_dim / 2;
#pragma omp parallel for
  for (int64_t n = 0; n < n_tokens; ++n) {
    // [hd/2] each: this token's cos and sin per pair.
    std::vector<float> cs(static_cast<size_t>(half)), sn(static_cast<size_t>(half));
    rope_cos_sin(cs.data(), sn.data(), freqs, position_offset + n);
    // R(-a) = R(a)^T: negating sin turns the rotation into its transpose.
    if (transpose)
      for (float& s : sn) s = -s;
    for (int64_t h = 0; h < n_heads; ++h) {
      float* xh = x + (n * n_heads + h) * head_dim;  // [hd]
      for (int64_t j = 0; j < half; ++j) {
        // HF: q * cos + rotate_half(q) * sin, rotate_half(q) = cat(-q2, q1).
        const float x1 = xh[j];
        const float x2 = xh[j + half];
        const float c = cs[size_t(j)], s = sn[size_t(j)];
        xh[j] = x1 * c + (-x2) * s;
        xh[j + half] = x2 * c + x1 * s;
      }
    }
  }
}

}  // namespace

void rope_forward(float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim,
                  int64_t position_offset, const RopeFrequencies& freqs) {
  check_rope_args("rope", n_tokens, n_heads, head_dim, freqs);
  rope_rotate(x, n_tokens, n_heads, head_dim, position_offset, freqs, false);
}

void rope_backward(float* dx, int64_t n_tokens, int64_t n_heads, int64_t head_dim,
                   int64_t position_offset, const RopeFrequencies& freqs) {
  check_rope_args("rope_backward", n_tokens, n_heads, head_dim, freqs);
  // out = s R(a) x per pair, so dx = s R(a)^T dout = s R(-a) dout.
  rope_rotate(dx, n_tokens, n_heads, head_dim, position_offset, freqs, true);
}

}  // namespace ll::cpu
