#pragma once
// A short identity of a base model, stored in checkpoints so that resuming on another model
// (or a changed config) is refused instead of silently training garbage.
#include <string>

#include "model/llama_weights.h"

namespace ll {

// 16 hex digits: FNV-1a over the config's JSON, every tensor's name and shape, and a strided
// sample of at most 4096 values of every tensor (cheap even for 70B, yet any re-initialised
// or different checkpoint differs).
std::string model_fingerprint(const LlamaWeights& weights);

}  // namespace ll
