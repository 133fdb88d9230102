#include "kernels/cpu/rope.h"

#include <cmath>
#include <vector>

#include "common/error.h"

namespace ll::cpu {

void rope_forward(float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim,
                  int64_t position_offset, double scale, double theta) {
  LL_CHECK(n_tokens >= 0 && n_heads >= 0, "rope: negative size (tokens {}, heads {})", n_tokens,
           n_heads);
  LL_CHECK(head_dim >= 2 && head_dim % 2 == 0, "rope: head_dim {} must be even and >= 2", head_dim);
  LL_CHECK(scale > 0.0 && std::isfinite(scale), "rope: position scale {} must be > 0", scale);
  LL_CHECK(theta > 0.0 && std::isfinite(theta), "rope: theta {} must be > 0", theta);
  const int64_t half = head_dim / 2;

  // The angle is formed in fp32 exactly as transformers 5 does (the version the fixtures are
  // made with), because at long positions one fp32 ulp of the angle is visible in the output:
  //   inv_freq = 1.0 / (base ** (arange(0, dim, 2).float() / dim)); inv_freq /= factor
  //   angle = position.float() * inv_freq
  // Older transformers (4.3x, which LongLoRA used) divided the position by the factor
  // instead: bit-identical for power-of-two factors, otherwise the angle may differ by an ulp
  // (up to ~5e-4 in cos/sin at position 100k with factor 25). Only cos/sin are taken in
  // double, then rounded; torch's fp32 cos/sin are within an ulp of that.
  std::vector<float> inv_freq(static_cast<size_t>(half));  // [hd/2]
  const float base = float(theta);
  const float factor = float(scale);
  for (int64_t j = 0; j < half; ++j) {
    const float exponent = float(2 * j) / float(head_dim);
    float f = 1.0f / std::pow(base, exponent);
    if (factor != 1.0f) f = f / factor;
    inv_freq[size_t(j)] = f;
  }

#pragma omp parallel for
  for (int64_t n = 0; n < n_tokens; ++n) {
    const float pos = float(position_offset + n);
    // [hd/2] each: this token's cos and sin per pair.
    std::vector<float> cs(static_cast<size_t>(half)), sn(static_cast<size_t>(half));
    for (int64_t j = 0; j < half; ++j) {
      const float angle = pos * inv_freq[size_t(j)];
      cs[size_t(j)] = float(std::cos(double(angle)));
      sn[size_t(j)] = float(std::sin(double(angle)));
    }
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

}  // namespace ll::cpu
