#include "kernels/attention_pattern.h"

#include <cmath>

#include "common/error.h"

namespace ll {

void check_s2_group(const S2GroupInput& in) {
  if (in.ratio) {
    const double ratio = *in.ratio;
    LL_CHECK(std::isfinite(ratio), "--group-ratio must be a finite number (got {})", ratio);
    LL_CHECK(ratio > 0 && ratio <= 1,
             "--group-ratio must be in (0, 1] (got {}); the S2-Attn group is ctx * ratio tokens",
             ratio);
    if (in.seq_len) {
      const double g = double(*in.seq_len) * ratio;
      LL_CHECK(g >= 2.0,
               "S2-Attn group size --ctx x --group-ratio = {} x {} = {} is below 2 tokens: use a "
               "larger --group-ratio or --ctx, or --full-attn",
               *in.seq_len, ratio, g);
    }
  }
  if (in.group_size)
    LL_CHECK(*in.group_size >= 2 && *in.group_size % 2 == 0,
             "S2-Attn group size must be even and at least 2, got {}", *in.group_size);
  if (in.n_heads)
    LL_CHECK(*in.n_heads % 2 == 0,
             "S2-Attn shifts half of the heads, but the model has {} heads: use --full-attn",
             *in.n_heads);
}

}  // namespace ll
