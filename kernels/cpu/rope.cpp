#include "kernels/cpu/rope.h"

#include <cmath>
#include <vector>

#include "common/error.h"

namespace ll::cpu {

// The per-pair frequencies [hd/2], formed in fp32 exactly as transformers 5 does (the version
// the fixtures are made with), because at long positions one fp32 ulp of the angle is visible
// in the output:
//   inv_freq = 1.0 / (base ** (arange(0, dim, 2).float() / dim)); inv_freq /= factor
//   angle = position.float() * inv_freq
// Older transformers (4.3x, which LongLoRA used) divided the position by the factor
// instead: bit-identical for power-of-two factors, otherwise the angle may differ by an ulp
// (up to ~5e-4 in cos/sin at position 100k with factor 25).
std::vector<float> rope_inv_freq(int64_t head_dim, double scale, double theta) {
  const int64_t half = head_dim / 2;
  std::vector<float> inv_freq(static_cast<size_t>(half));  // [hd/2]
  const float base = float(theta);
  const float factor = float(scale);
  for (int64_t j = 0; j < half; ++j) {
    const float exponent = float(2 * j) / float(head_dim);
    float f = 1.0f / std::pow(base, exponent);
    if (factor != 1.0f) f = f / factor;
    inv_freq[size_t(j)] = f;
  }
  return inv_freq;
}

namespace {

void check_rope_args(const char* op, int64_t n_tokens, int64_t n_heads, int64_t head_dim,
                     double scale, double theta) {
  LL_CHECK(n_tokens >= 0 && n_heads >= 0, "{}: negative size (tokens {}, heads {})", op, n_tokens,
           n_heads);
  LL_CHECK(head_dim >= 2 && head_dim % 2 == 0, "{}: head_dim {} must be even and >= 2", op,
           head_dim);
  LL_CHECK(scale > 0.0 && std::isfinite(scale), "{}: position scale {} must be > 0", op, scale);
  LL_CHECK(theta > 0.0 && std::isfinite(theta), "{}: theta {} must be > 0", op, theta);
}

// cos and sin [hd/2] of one token's angles. Only cos/sin are taken in double, then rounded;
// torch's fp32 cos/sin are within an ulp of that.
void rope_cos_sin(float* cs, float* sn, const std::vector<float>& inv_freq, int64_t position) {
  const float pos = float(position);
  for (size_t j = 0; j < inv_freq.size(); ++j) {
    const float angle = pos * inv_freq[j];
    cs[j] = float(std::cos(double(angle)));
    sn[j] = float(std::sin(double(angle)));
  }
}

// Rotates every pair (j, j + hd/2) of x [N, heads, hd] by +angle (forward) or -angle (the
// transpose, for backward), in place. Forward and backward share this one function, so they
// use the same angles by construction.
void rope_rotate(float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim,
                 int64_t position_offset, double scale, double theta, bool transpose) {
  const int64_t half = head_dim / 2;
  const std::vector<float> inv_freq = rope_inv_freq(head_dim, scale, theta);  // [hd/2]
#pragma omp parallel for
  for (int64_t n = 0; n < n_tokens; ++n) {
    // [hd/2] each: this token's cos and sin per pair.
    std::vector<float> cs(static_cast<size_t>(half)), sn(static_cast<size_t>(half));
    rope_cos_sin(cs.data(), sn.data(), inv_freq, position_offset + n);
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
                  int64_t position_offset, double scale, double theta) {
  check_rope_args("rope", n_tokens, n_heads, head_dim, scale, theta);
  rope_rotate(x, n_tokens, n_heads, head_dim, position_offset, scale, theta, false);
}

void rope_backward(float* dx, int64_t n_tokens, int64_t n_heads, int64_t head_dim,
                   int64_t position_offset, double scale, double theta) {
  check_rope_args("rope_backward", n_tokens, n_heads, head_dim, scale, theta);
  // out = R(a) x per pair, so dx = R(a)^T dout = R(-a) dout.
  rope_rotate(dx, n_tokens, n_heads, head_dim, position_offset, scale, theta, true);
}

}  // namespace ll::cpu
