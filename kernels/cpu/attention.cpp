#include "kernels/cpu/attention.h"

#include <cmath>
#include <limits>
#include <vector>

#include "common/error.h"

namespace ll::cpu {
namespace {

void validate(int64_t n_tokens, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
              const AttnMask& mask) {
  LL_CHECK(n_tokens >= 0 && n_heads >= 1 && n_kv_heads >= 1 && head_dim >= 1,
           "attention: bad shape (tokens {}, heads {}, kv heads {}, head_dim {})", n_tokens,
           n_heads, n_kv_heads, head_dim);
  LL_CHECK(n_heads % n_kv_heads == 0,
           "attention: {} query heads are not a multiple of {} key/value heads", n_heads,
           n_kv_heads);
  LL_CHECK(mask.seq_len == n_tokens, "attention: mask is for {} tokens, input has {}", mask.seq_len,
           n_tokens);
  // The S2 modes split heads into halves by mask.n_heads; a mismatch would misplace the split.
  LL_CHECK(mask.n_heads == n_heads, "attention: mask is for {} heads, input has {}", mask.n_heads,
           n_heads);
  if (mask.mode == AttnMode::Dense) return;
  LL_CHECK(mask.mode == AttnMode::S2 || mask.mode == AttnMode::S2Roll,
           "attention: unknown mask mode {}", int(mask.mode));
  LL_CHECK(n_heads % 2 == 0, "attention: S2-Attn needs an even number of heads, got {}", n_heads);
  LL_CHECK(mask.group_size >= 2 && mask.group_size % 2 == 0,
           "attention: S2-Attn group size {} must be even and >= 2", mask.group_size);
}

}  // namespace

void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                       int64_t n_tokens, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
                       const AttnMask& mask) {
  validate(n_tokens, n_heads, n_kv_heads, head_dim, mask);
  const int64_t n = n_tokens, hd = head_dim;
  const int64_t heads_per_kv = n_heads / n_kv_heads;
  // HF multiplies the fp32 scores by head_dim**-0.5.
  const float scale = float(1.0 / std::sqrt(double(hd)));

#pragma omp parallel
  {
    // Per thread: the current query's scores [visited keys] and unnormalised output [hd].
    std::vector<float> scores(static_cast<size_t>(n));
    std::vector<double> acc(static_cast<size_t>(hd));
    // Causal rows differ in length, so hand out (head, query) pairs dynamically.
#pragma omp for collapse(2) schedule(dynamic, 8)
    for (int64_t h = 0; h < n_heads; ++h) {
      for (int64_t i = 0; i < n; ++i) {
        const KeyRange range = attn_key_range(mask, h, i);
        const int64_t kvh = h / heads_per_kv;
        const float* qi = q + (i * n_heads + h) * hd;  // [hd]
        float mx = -std::numeric_limits<float>::infinity();
        for (int64_t vi = range.first; vi <= range.last; ++vi) {
          const int64_t key = attn_key_of_visit(mask, h, vi);
          const float* kj = k + (key * n_kv_heads + kvh) * hd;  // [hd]
          float dot = 0.0f;
          for (int64_t d = 0; d < hd; ++d) dot += qi[d] * kj[d];
          const float s = dot * scale;
          scores[size_t(vi - range.first)] = s;
          mx = s > mx ? s : mx;
        }
        // Softmax with the max subtracted; sums in double so long rows lose nothing.
        double sum = 0.0;
        for (int64_t d = 0; d < hd; ++d) acc[size_t(d)] = 0.0;
        for (int64_t vi = range.first; vi <= range.last; ++vi) {
          const int64_t key = attn_key_of_visit(mask, h, vi);
          const float* vj = v + (key * n_kv_heads + kvh) * hd;  // [hd]
          const double p = std::exp(double(scores[size_t(vi - range.first)]) - double(mx));
          sum += p;
          for (int64_t d = 0; d < hd; ++d) acc[size_t(d)] += p * double(vj[d]);
        }
        float* oi = out + (i * n_heads + h) * hd;  // [hd]
        for (int64_t d = 0; d < hd; ++d) oi[d] = float(acc[size_t(d)] / sum);
        if (lse != nullptr) lse[h * n + i] = float(double(mx) + std::log(sum));
      }
    }
  }
}

}  // namespace ll::cpu
