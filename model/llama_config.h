#pragma once
// The Llama-2 architecture hyper-parameters, as in a Hugging Face config.json.
#include <cstdint>
#include <string>

#include <nlohmann/json_fwd.hpp>

#include "kernels/rope_scaling.h"

namespace ll {

struct LlamaConfig {
  int64_t hidden_size = 0;              // D
  int64_t intermediate_size = 0;        // F (SwiGLU width)
  int64_t num_hidden_layers = 0;        // L
  int64_t num_attention_heads = 0;      // H
  int64_t num_key_value_heads = 0;      // Hkv (= H without GQA); H % Hkv == 0
  int64_t vocab_size = 0;               // V
  int64_t max_position_embeddings = 0;  // the context the base model was trained on
  double rms_norm_eps = 1e-6;           // HF's class default; Llama-2 configs say 1e-5
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;  // rope_scaling / rope_parameters (kernels/rope_scaling.h)
  bool tie_word_embeddings = false;
  int64_t bos_token_id = 1;
  int64_t eos_token_id = 2;

  int64_t head_dim() const { return hidden_size / num_attention_heads; }
  int64_t kv_dim() const { return head_dim() * num_key_value_heads; }
};

// Parse and validate a config.json document. `source` names the file in error messages.
// Throws ll::Error for missing or non-integral fields, values that do not divide
// (hidden_size % heads, heads % kv heads), odd head_dim (RoPE pairs), an unsupported or invalid
// rope_scaling (kernels/rope_scaling.h: rope_scaling_from_json).
LlamaConfig llama_config_from_json(const nlohmann::json& doc, const std::string& source);
LlamaConfig llama_config_from_file(const std::string& path);
// The HF-style JSON of a config (what .bin headers and exported config.json carry).
nlohmann::json llama_config_to_json(const LlamaConfig& config);
// Checks that can fail on a config built in code; called by llama_config_from_json too.
void validate_llama_config(const LlamaConfig& config, const std::string& source);

}  // namespace ll
