#include "model/position_interpolation.h"

#include <fmt/format.h>
#include <algorithm>
#include <cmath>

#include "common/error.h"

namespace ll {

RopeChoice rope_for_context(const RopeScaling& current, int64_t max_positions,
                            int64_t target_context, std::optional<RopeType> type, double factor) {
  LL_CHECK(target_context >= 1, "context length {} must be positive", target_context);
  LL_CHECK(max_positions >= 1, "max_position_embeddings {} must be positive", max_positions);
  LL_CHECK(factor <= 0.0 || (std::isfinite(factor) && factor >= 1.0),
           "RoPE factor {} must be a finite number >= 1", factor);
  const int64_t own = rope_context_length(current, max_positions);
  if (factor <= 0.0 && target_context <= own) {
    return {current, fmt::format("model config ({} tokens are within its context of {})",
                                 target_context, own)};
  }
  const RopeType t = type                                ? *type
                     : current.type == RopeType::Default ? RopeType::Linear
                                                         : current.type;
  RopeChoice c;
  c.rope = current.type == t ? current : RopeScaling{};
  c.rope.type = t;
  const int64_t original = current.original_max_position_embeddings > 0
                               ? current.original_max_position_embeddings
                               : max_positions;
  switch (t) {
    case RopeType::Default:
      fail("RoPE scaling \"default\" cannot extend the context; use linear, yarn or llama3");
    case RopeType::Linear:
      c.rope.factor =
          factor > 0.0 ? factor : std::ceil(double(target_context) / double(max_positions));
      c.source = factor > 0.0 ? "given factor"
                              : fmt::format("ceil({} / {})", target_context, max_positions);
      break;
    case RopeType::Dynamic:
      c.rope.factor = factor > 0.0 ? factor : double(target_context) / double(max_positions);
      c.source =
          factor > 0.0 ? "given factor" : fmt::format("{} / {}", target_context, max_positions);
      break;
    case RopeType::Yarn:
    case RopeType::Llama3:
      c.rope.original_max_position_embeddings = original;
      c.rope.factor = factor > 0.0 ? factor : double(target_context) / double(original);
      if (t == RopeType::Yarn && c.rope.factor != current.factor) c.rope.attention_factor.reset();
      c.source = factor > 0.0 ? "given factor"
                              : fmt::format("{} / {} (original context)", target_context, original);
      break;
  }
  c.rope.factor = std::max(c.rope.factor, 1.0);
  if (c.rope.type == RopeType::Linear && c.rope.factor == 1.0) c.rope = RopeScaling{};
  validate_rope_scaling(c.rope, "RoPE scaling for the context");
  return c;
}

}  // namespace ll
