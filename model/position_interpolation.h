#pragma once
// Linear position interpolation as LongLoRA sets it (train and eval.py alike): for a target
// context longer than the base model's max_position_embeddings, s = ceil(target / max_pos)
// (100k on a 4k model gives 25); otherwise the config's own rope_scaling factor stays.
#include <cmath>
#include <cstdint>

#include "model/llama_config.h"

namespace ll {

inline double position_interpolation_factor(const LlamaConfig& config, int64_t target_context) {
  if (target_context > config.max_position_embeddings && config.max_position_embeddings > 0) {
    return std::ceil(double(target_context) / double(config.max_position_embeddings));
  }
  return config.rope_scaling_factor;
}

}  // namespace ll
