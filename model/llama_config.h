#pragma once
// The hyper-parameters of a Llama-family decoder (Llama-2/3.x, Mistral, Qwen2/2.5), as in a
// Hugging Face config.json. The families share one layout; they differ in the fields below.
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "kernels/rope_scaling.h"

namespace ll {

// The architectures this engine runs, by config.json's "model_type".
enum class ModelFamily { Llama, Mistral, Qwen2 };
const char* model_type_name(ModelFamily family);         // "llama", "mistral", "qwen2"
const char* causal_lm_architecture(ModelFamily family);  // "LlamaForCausalLM", ...

struct LlamaConfig {
  ModelFamily family = ModelFamily::Llama;
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
  int64_t eos_token_id = 2;                  // the first of eos_token_ids
  std::vector<int64_t> eos_token_ids = {2};  // every id that ends a generation (Llama-3: 3)
  // config.json's "head_dim"; 0 = hidden_size / num_attention_heads (Mistral-Nemo: 128, not
  // 5120 / 32 = 160).
  int64_t explicit_head_dim = 0;
  bool qkv_bias = false;  // q_proj, k_proj, v_proj have a bias (Qwen2; Llama attention_bias)
  bool o_bias = false;    // o_proj has a bias (Llama attention_bias only)
  // Mistral's sliding-window attention span in tokens; 0 = none (v0.2+, Llama, Qwen2 with
  // use_sliding_window false). Attention over more positions than this is refused: the band
  // mask is not implemented.
  int64_t sliding_window = 0;

  int64_t head_dim() const {
    return explicit_head_dim > 0 ? explicit_head_dim : hidden_size / num_attention_heads;
  }
  int64_t q_dim() const { return head_dim() * num_attention_heads; }   // H * hd
  int64_t kv_dim() const { return head_dim() * num_key_value_heads; }  // Hkv * hd
};

// Parse and validate a config.json document. `source` names the file in error messages.
// Throws ll::Error for missing or non-integral fields, values that do not divide
// (hidden_size % heads without head_dim, heads % kv heads), odd head_dim (RoPE pairs), an
// unsupported or invalid rope_scaling (kernels/rope_scaling.h: rope_scaling_from_json), an
// unknown model_type, Qwen2's use_sliding_window, MLP bias.
LlamaConfig llama_config_from_json(const nlohmann::json& doc, const std::string& source);
LlamaConfig llama_config_from_file(const std::string& path);
// The HF-style JSON of a config (what .bin headers and exported config.json carry).
nlohmann::json llama_config_to_json(const LlamaConfig& config);
// Checks that can fail on a config built in code; called by llama_config_from_json too.
void validate_llama_config(const LlamaConfig& config, const std::string& source);
// Refuses a forward over `positions` positions (the last position + 1) that Mistral's sliding
// window would restrict; `what` says what asked for them (e.g. "-ctx 8192").
void check_sliding_window(const LlamaConfig& config, int64_t positions, const std::string& what);

}  // namespace ll
