#pragma once
// LoRA adapter settings (PEFT's LoraConfig subset LongLoRA uses) and which base-model
// tensors are trained besides the adapters ("LoRA+": embeddings and norms).
#include <cstdint>
#include <string>
#include <vector>

namespace ll {

// Linear layers of a Llama block that may carry a LoRA adapter, by their HF module names.
inline const std::vector<std::string>& lora_target_names() {
  static const std::vector<std::string> names = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                                 "gate_proj", "up_proj", "down_proj"};
  return names;
}

struct LoraConfig {
  int64_t rank = 8;
  double alpha = 16.0;
  std::vector<std::string> targets = {"q_proj", "k_proj", "v_proj", "o_proj"};
  double scaling() const { return alpha / double(rank); }  // y = W x + scaling * B (A x)
  bool targets_module(const std::string& module) const;
  // Throws ll::Error for rank < 1, alpha <= 0, an unknown or repeated target.
  void validate() const;
};

// "q_proj,k_proj" -> {"q_proj", "k_proj"}; "all-linear" -> every name of lora_target_names().
std::vector<std::string> parse_lora_targets(const std::string& list);

// Base-model tensors trained next to the adapters: none unless named, by a designated
// initializer ({.norms = true}) or by one of the sets below.
struct TrainableSet {
  bool embed_tokens = false;  // model.embed_tokens.weight
  bool norms = false;         // every input/post_attention_layernorm and model.norm
  // The projections' biases (Qwen2's q/k/v). LoRA leaves them frozen, as PEFT does.
  bool bias = false;
  bool linear = false;  // every frozen linear weight (full fine-tuning / pretraining)

  static constexpr TrainableSet nothing() { return {}; }
  // The paper's LoRA+: embeddings and norms (train_longlora's default).
  static constexpr TrainableSet lora_plus() { return {.embed_tokens = true, .norms = true}; }
  static constexpr TrainableSet everything() {
    return {.embed_tokens = true, .norms = true, .bias = true, .linear = true};
  }
};

// "embed,norm" (default), "bias" may be added, "none", "all" (embed, norm, bias and every
// linear weight: full fine-tuning, used to pretrain the demo model). Throws ll::Error for
// unknown words.
TrainableSet parse_trainable(const std::string& list);
std::string trainable_name(const TrainableSet& set);  // inverse of parse_trainable

}  // namespace ll
