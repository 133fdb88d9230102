#pragma once
// The RoPE scaling for a target context: LongLoRA's context extension, generalised to the
// scaling types of kernels/rope_scaling.h (docs/subsystems/rope-scaling.md).
#include <cstdint>
#include <optional>
#include <string>

#include "kernels/rope_scaling.h"

namespace ll {

struct RopeChoice {
  RopeScaling rope;
  std::string source;  // how it was decided, for log lines ("ceil(100000 / 4096)")
};

// On a model whose config has scaling `current` and max_position_embeddings `max_positions`:
//   - factor <= 0 and a target within rope_context_length(current): `current` unchanged;
//   - otherwise of `type` (default: current's own type; linear for a model without scaling),
//     with `factor` when > 0, else from the target: linear ceil(target / max_positions)
//     (LongLoRA), yarn and llama3 target / original context (current's
//     original_max_position_embeddings when it has one, else max_positions), dynamic
//     target / max_positions. yarn and llama3 keep current's other fields when current has that
//     type (yarn drops an explicit attention_factor: it belonged to the old factor), else
//     transformers' defaults (llama3: low 1, high 4, Llama-3.1's values).
// Throws ll::Error for a factor < 1 or a target < 1.
RopeChoice rope_for_context(const RopeScaling& current, int64_t max_positions,
                            int64_t target_context, std::optional<RopeType> type, double factor);

}  // namespace ll
