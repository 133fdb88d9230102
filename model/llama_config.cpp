#include "model/llama_config.h"

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/mapped_file.h"

namespace ll {
namespace {

using nlohmann::json;

// Sizes beyond these are not Llama models but damaged or hostile files; bounding them keeps
// every product (V * D, F * D, ...) far from int64 overflow.
constexpr int64_t kMaxDim = int64_t(1) << 24;
constexpr int64_t kMaxPositions = int64_t(1) << 30;

const json* field(const json& doc, const char* key) {
  auto it = doc.find(key);
  return (it == doc.end() || it->is_null()) ? nullptr : &*it;
}

int64_t as_int(const json& v, const char* key, const std::string& source) {
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_number_unsigned()) {
    LL_CHECK(v.get<uint64_t>() <= uint64_t(INT64_MAX), "{}: field \"{}\" = {} is too large", source,
             key, v.dump());
    return int64_t(v.get<uint64_t>());
  }
  fail("{}: field \"{}\" must be an integer, found {}", source, key, v.dump());
}

int64_t required_int(const json& doc, const char* key, const std::string& source) {
  const json* v = field(doc, key);
  LL_CHECK(v != nullptr, "{}: missing field \"{}\"; is this a Llama config.json?", source, key);
  return as_int(*v, key, source);
}

int64_t optional_int(const json& doc, const char* key, int64_t fallback,
                     const std::string& source) {
  const json* v = field(doc, key);
  return v ? as_int(*v, key, source) : fallback;
}

double optional_number(const json& doc, const char* key, double fallback,
                       const std::string& source) {
  const json* v = field(doc, key);
  if (!v) return fallback;
  LL_CHECK(v->is_number(), "{}: field \"{}\" must be a number, found {}", source, key, v->dump());
  return v->get<double>();
}

// bos/eos may be an integer or (newer configs) a list of ids: the first one is used.
int64_t token_id(const json& doc, const char* key, int64_t fallback, const std::string& source) {
  const json* v = field(doc, key);
  if (!v) return fallback;
  if (v->is_array()) {
    LL_CHECK(!v->empty(), "{}: field \"{}\" is an empty list; give at least one token id", source,
             key);
    return as_int(v->front(), key, source);
  }
  return as_int(*v, key, source);
}

// eos_token_id as an integer or (Llama-3) a list of ids, every one kept.
std::vector<int64_t> token_ids(const json& doc, const char* key, int64_t fallback,
                               const std::string& source) {
  const json* v = field(doc, key);
  if (!v) return {fallback};
  if (!v->is_array()) return {as_int(*v, key, source)};
  LL_CHECK(!v->empty(), "{}: field \"{}\" is an empty list; give at least one token id", source,
           key);
  LL_CHECK(v->size() <= 1024, "{}: field \"{}\" lists {} ids; the limit is 1024", source, key,
           v->size());
  std::vector<int64_t> ids;
  for (const json& id : *v) ids.push_back(as_int(id, key, source));
  return ids;
}

bool optional_bool(const json& doc, const char* key, bool fallback, const std::string& source) {
  const json* v = field(doc, key);
  if (!v) return fallback;
  LL_CHECK(v->is_boolean(), "{}: field \"{}\" must be true or false, found {}", source, key,
           v->dump());
  return v->get<bool>();
}

// "model_type" (absent: llama, as the oldest Llama configs). The families' own names only:
// another architecture with a Llama-like config would load wrong weights silently.
ModelFamily family_of(const json& doc, const std::string& source) {
  const json* type = field(doc, "model_type");
  if (!type) return ModelFamily::Llama;
  LL_CHECK(type->is_string(), "{}: field \"model_type\" must be a string, found {}", source,
           type->dump());
  const std::string name = type->get<std::string>();
  for (ModelFamily f : {ModelFamily::Llama, ModelFamily::Mistral, ModelFamily::Qwen2}) {
    if (name == model_type_name(f)) return f;
  }
  fail(
      "{}: model_type \"{}\" is not supported; this engine runs \"llama\" (Llama-2, Llama-3.x), "
      "\"mistral\" and \"qwen2\" (Qwen2, Qwen2.5) models",
      source, name);
}

// rope_scaling (transformers 4) or rope_parameters (transformers 5, rope_theta inside), read by
// kernels/rope_scaling.h; both may be present and must then agree.
RopeScaling rope_scaling_of(const json& doc, int64_t max_positions, const std::string& source) {
  const json* scaling = field(doc, "rope_scaling");
  const json* params = field(doc, "rope_parameters");
  const int64_t mpe = max_positions > 0 ? max_positions : 0;
  RopeScaling a, b;
  if (scaling) a = rope_scaling_from_json(*scaling, mpe, source + ": field \"rope_scaling\"");
  if (params) b = rope_scaling_from_json(*params, mpe, source + ": field \"rope_parameters\"");
  LL_CHECK(!scaling || !params || a == b, "{}: rope_scaling ({}) and rope_parameters ({}) disagree",
           source, describe_rope_scaling(a), describe_rope_scaling(b));
  return params ? b : a;
}

// rope_theta at the top level (Llama-2 configs) or inside rope_parameters (transformers 5).
double rope_theta_of(const json& doc, const std::string& source) {
  const double top = optional_number(doc, "rope_theta", 10000.0, source);
  const json* params = field(doc, "rope_parameters");
  if (!params || !params->is_object() || !field(*params, "rope_theta")) return top;
  const double inner = optional_number(*params, "rope_theta", 10000.0, source);
  LL_CHECK(!field(doc, "rope_theta") || inner == top,
           "{}: rope_theta ({}) and rope_parameters.rope_theta ({}) disagree", source, top, inner);
  return inner;
}

}  // namespace

void validate_llama_config(const LlamaConfig& c, const std::string& source) {
  const std::pair<const char*, int64_t> sizes[] = {
      {"hidden_size", c.hidden_size},
      {"intermediate_size", c.intermediate_size},
      {"num_hidden_layers", c.num_hidden_layers},
      {"num_attention_heads", c.num_attention_heads},
      {"num_key_value_heads", c.num_key_value_heads},
      {"vocab_size", c.vocab_size},
  };
  for (const auto& [key, value] : sizes) {
    LL_CHECK(value > 0, "{}: field \"{}\" = {} must be positive", source, key, value);
    LL_CHECK(value <= kMaxDim, "{}: field \"{}\" = {} is implausibly large (limit {})", source, key,
             value, kMaxDim);
  }
  LL_CHECK(c.max_position_embeddings > 0 && c.max_position_embeddings <= kMaxPositions,
           "{}: field \"max_position_embeddings\" = {} must be in [1, {}]", source,
           c.max_position_embeddings, kMaxPositions);
  LL_CHECK(c.explicit_head_dim >= 0 && c.explicit_head_dim <= kMaxDim,
           "{}: field \"head_dim\" = {} must be positive (limit {})", source, c.explicit_head_dim,
           kMaxDim);
  LL_CHECK(c.explicit_head_dim > 0 || c.hidden_size % c.num_attention_heads == 0,
           "{}: hidden_size = {} is not divisible by num_attention_heads = {}; fix config.json "
           "(or give head_dim)",
           source, c.hidden_size, c.num_attention_heads);
  LL_CHECK(c.q_dim() <= kMaxDim, "{}: head_dim x num_attention_heads = {} is implausibly large",
           source, c.q_dim());
  LL_CHECK(c.num_attention_heads % c.num_key_value_heads == 0,
           "{}: num_attention_heads = {} is not divisible by num_key_value_heads = {}; "
           "fix config.json",
           source, c.num_attention_heads, c.num_key_value_heads);
  LL_CHECK(c.head_dim() % 2 == 0 && c.head_dim() > 0,
           "{}: head_dim = {} is odd; RoPE rotates pairs and needs an even head_dim", source,
           c.head_dim());
  LL_CHECK(std::isfinite(c.rms_norm_eps) && c.rms_norm_eps > 0,
           "{}: field \"rms_norm_eps\" = {} must be a finite positive number", source,
           c.rms_norm_eps);
  LL_CHECK(std::isfinite(c.rope_theta) && c.rope_theta > 0,
           "{}: field \"rope_theta\" = {} must be a finite positive number", source, c.rope_theta);
  validate_rope_scaling(c.rope_scaling, source + ": field \"rope_scaling\"");
  LL_CHECK(c.bos_token_id >= 0 && c.bos_token_id < c.vocab_size,
           "{}: field \"bos_token_id\" = {} is outside the vocabulary [0, {})", source,
           c.bos_token_id, c.vocab_size);
  LL_CHECK(!c.eos_token_ids.empty() && c.eos_token_ids.front() == c.eos_token_id,
           "{}: eos_token_ids must start with eos_token_id = {}", source, c.eos_token_id);
  for (int64_t id : c.eos_token_ids) {
    LL_CHECK(id >= 0 && id < c.vocab_size,
             "{}: field \"eos_token_id\" = {} is outside the vocabulary [0, {})", source, id,
             c.vocab_size);
  }
  LL_CHECK(c.sliding_window >= 0, "{}: field \"sliding_window\" = {} must be positive or null",
           source, c.sliding_window);
}

const char* model_type_name(ModelFamily family) {
  switch (family) {
    case ModelFamily::Mistral:
      return "mistral";
    case ModelFamily::Qwen2:
      return "qwen2";
    case ModelFamily::Llama:
      break;
  }
  return "llama";
}

const char* causal_lm_architecture(ModelFamily family) {
  switch (family) {
    case ModelFamily::Mistral:
      return "MistralForCausalLM";
    case ModelFamily::Qwen2:
      return "Qwen2ForCausalLM";
    case ModelFamily::Llama:
      break;
  }
  return "LlamaForCausalLM";
}

void check_sliding_window(const LlamaConfig& c, int64_t positions, const std::string& what) {
  LL_CHECK(c.sliding_window == 0 || positions <= c.sliding_window,
           "{} covers {} positions, more than the model's sliding_window = {}: Mistral's "
           "sliding-window (band) attention is not implemented; use a context of at most {} "
           "tokens, or a model whose config has \"sliding_window\": null (Mistral v0.2 and later)",
           what, positions, c.sliding_window, c.sliding_window);
}

LlamaConfig llama_config_from_json(const json& doc, const std::string& source) {
  LL_CHECK(doc.is_object(), "{}: a config must be a JSON object, found {}", source,
           doc.type_name());
  const ModelFamily family = family_of(doc, source);
  if (const json* act = field(doc, "hidden_act")) {
    LL_CHECK(act->is_string() && act->get<std::string>() == "silu",
             "{}: field \"hidden_act\" = {} is not supported; Llama uses \"silu\"", source,
             act->dump());
  }
  const bool attention_bias = optional_bool(doc, "attention_bias", false, source);
  LL_CHECK(!optional_bool(doc, "mlp_bias", false, source),
           "{}: field \"mlp_bias\" = true is not supported; the MLP projections have no bias in "
           "the Llama, Mistral and Qwen2 families",
           source);
  LlamaConfig c;
  c.family = family;
  switch (family) {
    case ModelFamily::Qwen2:
      // Qwen2's q/k/v carry a bias whatever the config says (it has no attention_bias field).
      c.qkv_bias = true;
      LL_CHECK(!optional_bool(doc, "use_sliding_window", false, source),
               "{}: field \"use_sliding_window\" = true is not supported: sliding-window "
               "attention (band mask) is not implemented; Qwen2.5 checkpoints ship it false",
               source);
      break;
    case ModelFamily::Mistral:
      c.sliding_window = optional_int(doc, "sliding_window", 0, source);
      LL_CHECK(!attention_bias, "{}: field \"attention_bias\" = true: Mistral has no bias terms",
               source);
      break;
    case ModelFamily::Llama:
      // LlamaAttention's attention_bias puts a bias on all four projections.
      c.qkv_bias = c.o_bias = attention_bias;
      break;
  }
  c.hidden_size = required_int(doc, "hidden_size", source);
  c.intermediate_size = required_int(doc, "intermediate_size", source);
  c.num_hidden_layers = required_int(doc, "num_hidden_layers", source);
  c.num_attention_heads = required_int(doc, "num_attention_heads", source);
  c.num_key_value_heads = optional_int(doc, "num_key_value_heads", c.num_attention_heads, source);
  c.vocab_size = required_int(doc, "vocab_size", source);
  c.max_position_embeddings = required_int(doc, "max_position_embeddings", source);
  c.rms_norm_eps = optional_number(doc, "rms_norm_eps", 1e-6, source);
  c.rope_theta = rope_theta_of(doc, source);
  c.rope_scaling = rope_scaling_of(doc, c.max_position_embeddings, source);
  if (const json* tie = field(doc, "tie_word_embeddings")) {
    LL_CHECK(tie->is_boolean(), "{}: field \"tie_word_embeddings\" must be true or false, found {}",
             source, tie->dump());
    c.tie_word_embeddings = tie->get<bool>();
  }
  c.bos_token_id = token_id(doc, "bos_token_id", 1, source);
  c.eos_token_ids = token_ids(doc, "eos_token_id", 2, source);
  c.eos_token_id = c.eos_token_ids.front();
  // Newer configs spell head_dim out (Mistral-Nemo's differs from hidden_size / heads).
  if (const json* hd = field(doc, "head_dim")) {
    c.explicit_head_dim = as_int(*hd, "head_dim", source);
    LL_CHECK(c.explicit_head_dim > 0, "{}: field \"head_dim\" = {} must be positive", source,
             c.explicit_head_dim);
  }
  validate_llama_config(c, source);
  return c;
}

LlamaConfig llama_config_from_file(const std::string& path) {
  LL_CHECK(std::filesystem::is_regular_file(path),
           "{}: no such file; a Hugging Face model directory needs its config.json", path);
  const MappedFile file(path);
  LL_CHECK(file.size() <= 100u * 1000u * 1000u,
           "{}: config is {} bytes, over the 100 MB limit; the file is damaged", path, file.size());
  const char* text = reinterpret_cast<const char*>(file.data());
  json doc;
  try {
    doc = json::parse(text, text + file.size());
  } catch (const json::exception& e) {
    fail("{}: config is not valid JSON: {}", path, e.what());
  }
  return llama_config_from_json(doc, path);
}

json llama_config_to_json(const LlamaConfig& c) {
  json doc = {
      {"architectures", json::array({causal_lm_architecture(c.family)})},
      {"model_type", model_type_name(c.family)},
      {"hidden_act", "silu"},
      {"hidden_size", c.hidden_size},
      {"intermediate_size", c.intermediate_size},
      {"num_hidden_layers", c.num_hidden_layers},
      {"num_attention_heads", c.num_attention_heads},
      {"num_key_value_heads", c.num_key_value_heads},
      {"vocab_size", c.vocab_size},
      {"max_position_embeddings", c.max_position_embeddings},
      {"rms_norm_eps", c.rms_norm_eps},
      {"rope_theta", c.rope_theta},
      {"tie_word_embeddings", c.tie_word_embeddings},
      {"bos_token_id", c.bos_token_id},
      {"eos_token_id", c.eos_token_ids.size() == 1 ? json(c.eos_token_id) : json(c.eos_token_ids)},
  };
  if (c.explicit_head_dim > 0) doc["head_dim"] = c.explicit_head_dim;
  switch (c.family) {
    case ModelFamily::Llama:
      doc["attention_bias"] = c.qkv_bias;
      doc["mlp_bias"] = false;
      break;
    case ModelFamily::Mistral:
      doc["sliding_window"] = c.sliding_window > 0 ? json(c.sliding_window) : json(nullptr);
      break;
    case ModelFamily::Qwen2:
      doc["use_sliding_window"] = false;
      break;
  }
  doc["rope_scaling"] = rope_scaling_to_json(c.rope_scaling);
  return doc;
}

}  // namespace ll
