#pragma once
// Text generation with a key/value cache: the prompt is prefilled in one pass, then one token
// at a time. Temperature 0 is greedy (argmax, lowest id on ties); otherwise softmax(logits / T)
// restricted to the smallest set of most likely tokens whose mass reaches top_p (nucleus
// sampling), drawn with a generator seeded by `seed` (same seed, same tokens).
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "model/llama_model.h"

namespace ll {

struct SamplingOptions {
  double temperature = 0.0;  // 0: greedy
  double top_p = 1.0;        // in (0, 1]
  uint64_t seed = 0;
};

struct GenerationOptions {
  int64_t max_new_tokens = 128;
  SamplingOptions sampling;
  RopeScaling rope;  // the RoPE scaling the model was trained with
  // Generation ends after any of these tokens (the family's EOS ids: Llama-3 Instruct has
  // three); empty: never.
  std::vector<int32_t> stop_tokens;
};

struct GenerationResult {
  std::vector<int32_t> tokens;  // the generated ids (the stop token included when reached)
  bool stopped = false;         // ended at a stop token rather than max_new_tokens
  double prefill_s = 0.0;       // wall time of the prompt pass
  double decode_s = 0.0;        // wall time of the token-by-token steps
};

// Picks the next token from fp32 logits [V]. `state` is the sampler's generator state (a
// SplitMix64 counter), advanced once per sampled token; unused when greedy. Throws ll::Error
// for NaN logits or options out of range.
int32_t sample_token(std::span<const float> logits, const SamplingOptions& options,
                     uint64_t& state);

// Generates up to max_new_tokens after `prompt` (which the caller has encoded, BOS first).
// on_token (optional) is called with each new id as soon as it exists (streaming). The cache
// holds prompt + max_new_tokens positions. Throws ll::Error for an empty prompt or ids
// outside the vocabulary.
GenerationResult generate(LlamaModel& model, std::span<const int32_t> prompt,
                          const GenerationOptions& options,
                          const std::function<void(int32_t)>& on_token = {});

}  // namespace ll
