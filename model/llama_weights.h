#pragma once
// The parameters of a Llama model in fp32 host memory, named and shaped as in
// Hugging Face's LlamaForCausalLM. Linear weights are [out, in].
#include <cstdint>
#include <string>
#include <vector>

#include "model/formats/tensor_source.h"
#include "model/llama_config.h"

namespace ll {

struct LlamaLayerWeights {
  std::vector<float> input_layernorm;           // [D]
  std::vector<float> q_proj;                    // [H*hd, D]
  std::vector<float> k_proj;                    // [Hkv*hd, D]
  std::vector<float> v_proj;                    // [Hkv*hd, D]
  std::vector<float> o_proj;                    // [D, H*hd]
  std::vector<float> q_bias;                    // [H*hd] with config.qkv_bias, else empty
  std::vector<float> k_bias;                    // [Hkv*hd] with config.qkv_bias, else empty
  std::vector<float> v_bias;                    // [Hkv*hd] with config.qkv_bias, else empty
  std::vector<float> o_bias;                    // [D] with config.o_bias, else empty
  std::vector<float> post_attention_layernorm;  // [D]
  std::vector<float> gate_proj;                 // [F, D]
  std::vector<float> up_proj;                   // [F, D]
  std::vector<float> down_proj;                 // [D, F]
};

struct LlamaWeights {
  LlamaConfig config;
  std::vector<float> embed_tokens;  // [V, D]
  std::vector<LlamaLayerWeights> layers;
  std::vector<float> norm;     // [D]
  std::vector<float> lm_head;  // [V, D]; a copy of embed_tokens when tie_word_embeddings
};

// Check every expected tensor is present with the shape the config implies, that there are
// no unexpected tensors (rotary_emb.inv_freq is ignored), and convert to fp32.
// NaN/Inf in any weight is an error naming the tensor.
LlamaWeights load_llama_weights(const ModelFiles& files);

// One tensor a Llama checkpoint must hold: its HF name, the shape the config implies and the
// config fields that shape comes from (for error messages).
struct LlamaTensorSpec {
  std::string name;
  std::vector<int64_t> shape;
  std::string shape_from;  // e.g. "vocab_size = 32000, hidden_size = 4096"
  bool optional = false;   // lm_head.weight when tie_word_embeddings
};

// Every tensor of the config's model in HF order: embed_tokens, layer 0..L-1, norm, lm_head.
std::vector<LlamaTensorSpec> llama_tensor_specs(const LlamaConfig& config);

// The structural half of load_llama_weights (names, shapes, floating dtypes; no data read):
// what ./convert checks before streaming a model it never holds in memory.
void check_llama_tensors(const ModelFiles& files);

// The dtype the checkpoint stores its model tensors in when they all share one, else BF16 (the
// training dtype): the default of ./convert and ./export_hf, so a model round-trips unchanged.
DType llama_storage_dtype(const ModelFiles& files);

// F32 views of `weights` under their HF names, in llama_tensor_specs order (lm_head included
// even when tied), e.g. to write them with write_model_bin. The views point into `weights`.
std::vector<TensorEntry> llama_weights_tensors(const LlamaWeights& weights);

// Random weights for tests and benchmarks (normal(0, std), norms = 1).
LlamaWeights random_llama_weights(const LlamaConfig& config, uint64_t seed, float std = 0.02f);

}  // namespace ll
