#pragma once
// The Llama decoder forward pass, written once over the Backend interface: the CPU
// reference and the CUDA backend run this same schedule.
#include <cstdint>
#include <span>
#include <vector>

#include "kernels/attention_mask.h"
#include "kernels/backend.h"
#include "model/llama_weights.h"

namespace ll {

struct ForwardSpec {
  AttnMode attn_mode = AttnMode::Dense;  // S2 modes are for training; evaluation is dense
  int64_t group_size = 0;                // S2 group G (tokens); required for S2 modes
  double rope_scale = 1.0;               // linear position interpolation factor s: p -> p / s
  int64_t position_offset = 0;           // position of the first token
  int64_t classifier_chunk = 2048;       // tokens per LM-head chunk (memory: chunk * V floats)
};

class LlamaModel {
 public:
  // Uploads the weights into backend memory (converted to its activation dtype).
  LlamaModel(Backend& backend, const LlamaWeights& weights);

  const LlamaConfig& config() const { return config_; }
  Backend& backend() const { return backend_; }

  // Next-token cross-entropy of one sequence: out[t] = -log p(tokens[t+1] | tokens[0..t]),
  // N-1 values. The [N, V] logits never exist at once (see ForwardSpec::classifier_chunk).
  std::vector<float> next_token_losses(std::span<const int32_t> tokens, const ForwardSpec& spec);

  // Full logits [N, V], row-major. For short sequences (tests, generation).
  std::vector<float> logits(std::span<const int32_t> tokens, const ForwardSpec& spec);

 private:
  struct LayerTensors {
    OwnedTensor input_layernorm, q_proj, k_proj, v_proj, o_proj;
    OwnedTensor post_attention_layernorm, gate_proj, up_proj, down_proj;
  };

  // Runs embedding + all blocks + final norm; returns the normed hidden states [N, D].
  OwnedTensor final_hidden(std::span<const int32_t> tokens, const ForwardSpec& spec);
  AttnMask make_mask(int64_t n_tokens, const ForwardSpec& spec) const;
  OwnedTensor upload(const std::vector<float>& host, std::vector<int64_t> shape);

  Backend& backend_;
  LlamaConfig config_;
  OwnedTensor embed_tokens_;  // [V, D]
  std::vector<LayerTensors> layers_;
  OwnedTensor norm_;     // [D]
  OwnedTensor lm_head_;  // [V, D]
};

}  // namespace ll
