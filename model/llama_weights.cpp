#include "model/llama_weights.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <set>
#include <string_view>

#include <fmt/format.h>

#include "common/error.h"
#include "common/random.h"

namespace ll {
namespace {

constexpr std::string_view kIgnoredSuffix = "rotary_emb.inv_freq";  // buffers in old checkpoints

std::string shape_str(const std::vector<int64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

int64_t numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

bool is_norm(const std::string& name) { return name.ends_with("norm.weight"); }

// Calls f(spec, destination) for every tensor in HF order; destination is the matching
// vector of *w, or nullptr when w is null (specs only).
template <typename F>
void visit_tensors(const LlamaConfig& c, LlamaWeights* w, F&& f) {
  const int64_t D = c.hidden_size, F_ = c.intermediate_size, V = c.vocab_size;
  const int64_t KV = c.kv_dim(), Q = c.q_dim();
  const std::string d = fmt::format("hidden_size = {}", D);
  const std::string qd = fmt::format("num_attention_heads = {} x head_dim = {}, {}",
                                     c.num_attention_heads, c.head_dim(), d);
  const std::string vd = fmt::format("vocab_size = {}, {}", V, d);
  const std::string kvd = fmt::format("num_key_value_heads = {} x head_dim = {}, {}",
                                      c.num_key_value_heads, c.head_dim(), d);
  const std::string fd = fmt::format("intermediate_size = {}, {}", F_, d);
  auto dst = [&](std::vector<float> LlamaWeights::*member) { return w ? &(w->*member) : nullptr; };
  f(LlamaTensorSpec{"model.embed_tokens.weight", {V, D}, vd}, dst(&LlamaWeights::embed_tokens));
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    LlamaLayerWeights* l = w ? &w->layers[size_t(i)] : nullptr;
    auto ldst = [&](std::vector<float> LlamaLayerWeights::*member) {
      return l ? &(l->*member) : nullptr;
    };
    const std::string p = fmt::format("model.layers.{}.", i);
    f(LlamaTensorSpec{p + "self_attn.q_proj.weight", {Q, D}, qd}, ldst(&LlamaLayerWeights::q_proj));
    f(LlamaTensorSpec{p + "self_attn.k_proj.weight", {KV, D}, kvd},
      ldst(&LlamaLayerWeights::k_proj));
    f(LlamaTensorSpec{p + "self_attn.v_proj.weight", {KV, D}, kvd},
      ldst(&LlamaLayerWeights::v_proj));
    f(LlamaTensorSpec{p + "self_attn.o_proj.weight", {D, Q}, qd}, ldst(&LlamaLayerWeights::o_proj));
    if (c.qkv_bias) {
      f(LlamaTensorSpec{p + "self_attn.q_proj.bias", {Q}, qd}, ldst(&LlamaLayerWeights::q_bias));
      f(LlamaTensorSpec{p + "self_attn.k_proj.bias", {KV}, kvd}, ldst(&LlamaLayerWeights::k_bias));
      f(LlamaTensorSpec{p + "self_attn.v_proj.bias", {KV}, kvd}, ldst(&LlamaLayerWeights::v_bias));
    }
    if (c.o_bias) {
      f(LlamaTensorSpec{p + "self_attn.o_proj.bias", {D}, d}, ldst(&LlamaLayerWeights::o_bias));
    }
    f(LlamaTensorSpec{p + "mlp.gate_proj.weight", {F_, D}, fd},
      ldst(&LlamaLayerWeights::gate_proj));
    f(LlamaTensorSpec{p + "mlp.up_proj.weight", {F_, D}, fd}, ldst(&LlamaLayerWeights::up_proj));
    f(LlamaTensorSpec{p + "mlp.down_proj.weight", {D, F_}, fd},
      ldst(&LlamaLayerWeights::down_proj));
    f(LlamaTensorSpec{p + "input_layernorm.weight", {D}, d},
      ldst(&LlamaLayerWeights::input_layernorm));
    f(LlamaTensorSpec{p + "post_attention_layernorm.weight", {D}, d},
      ldst(&LlamaLayerWeights::post_attention_layernorm));
  }
  f(LlamaTensorSpec{"model.norm.weight", {D}, d}, dst(&LlamaWeights::norm));
  f(LlamaTensorSpec{"lm_head.weight", {V, D}, vd, c.tie_word_embeddings},
    dst(&LlamaWeights::lm_head));
}

// "a", "a and b", "a, b and 3 more" for messages about many tensors.
std::string name_list(const std::vector<std::string>& names) {
  std::string out = "\"" + names[0] + "\"";
  if (names.size() > 1) out += fmt::format(" and {} more", names.size() - 1);
  return out;
}

}  // namespace

std::vector<LlamaTensorSpec> llama_tensor_specs(const LlamaConfig& config) {
  std::vector<LlamaTensorSpec> specs;
  visit_tensors(config, nullptr, [&](LlamaTensorSpec spec, std::vector<float>*) {
    specs.push_back(std::move(spec));
  });
  return specs;
}

void check_llama_tensors(const ModelFiles& files) {
  const LlamaConfig& c = files.config;
  const std::vector<LlamaTensorSpec> specs = llama_tensor_specs(c);
  std::vector<std::string> missing;
  std::set<std::string> expected;
  for (const LlamaTensorSpec& s : specs) {
    expected.insert(s.name);
    if (!s.optional && files.tensors.find(s.name) == nullptr) missing.push_back(s.name);
  }
  LL_CHECK(missing.empty(),
           "{}: missing tensor {}; the checkpoint does not match its config (model_type {}, "
           "num_hidden_layers = {}, tie_word_embeddings = {})",
           files.path, name_list(missing), model_type_name(c.family), c.num_hidden_layers,
           c.tie_word_embeddings);

  std::vector<std::string> unexpected;
  const TensorEntry* first_unexpected = nullptr;
  for (const auto& [name, entry] : files.tensors.entries()) {
    if (expected.count(name) || name.ends_with(kIgnoredSuffix)) continue;
    unexpected.push_back(name);
    if (!first_unexpected) first_unexpected = &entry;
  }
  LL_CHECK(unexpected.empty(),
           "{}: unexpected tensor {}, which a model with this config (model_type {}, "
           "num_hidden_layers = {}, attention_bias = {}) does not have; do the config and the "
           "weights belong together?",
           first_unexpected ? first_unexpected->file : files.path, name_list(unexpected),
           model_type_name(c.family), c.num_hidden_layers, c.qkv_bias);

  for (const LlamaTensorSpec& s : specs) {
    const TensorEntry* t = files.tensors.find(s.name);
    if (t == nullptr) continue;  // an optional (tied) lm_head
    LL_CHECK(t->dtype == DType::F32 || t->dtype == DType::F16 || t->dtype == DType::BF16,
             "{}: tensor \"{}\" has dtype {}; weights must be F32, F16 or BF16", t->file, s.name,
             dtype_name(t->dtype));
    LL_CHECK(t->shape == s.shape,
             "{}: tensor \"{}\" has shape {}, expected {} (from {} in the config); the "
             "checkpoint does not match its config",
             t->file, s.name, shape_str(t->shape), shape_str(s.shape), s.shape_from);
  }
}

DType llama_storage_dtype(const ModelFiles& files) {
  std::set<DType> seen;
  for (const LlamaTensorSpec& s : llama_tensor_specs(files.config)) {
    if (const TensorEntry* t = files.tensors.find(s.name)) seen.insert(t->dtype);
  }
  return seen.size() == 1 ? *seen.begin() : DType::BF16;
}

LlamaWeights load_llama_weights(const ModelFiles& files) {
  check_llama_tensors(files);
  LlamaWeights w;
  w.config = files.config;
  w.layers.resize(size_t(w.config.num_hidden_layers));
  struct Job {
    const TensorEntry* src;
    std::vector<float>* dst;
  };
  std::vector<Job> jobs;
  visit_tensors(w.config, &w, [&](const LlamaTensorSpec& s, std::vector<float>* dst) {
    const TensorEntry* t = files.tensors.find(s.name);
    if (t == nullptr) return;         // tied lm_head, copied below
    dst->resize(size_t(t->numel()));  // allocation stays outside the parallel region
    jobs.push_back({t, dst});
  });

  // Exceptions may not leave an OpenMP region: each job records its fault instead.
  std::vector<std::string> errors(jobs.size());
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t j = 0; j < int64_t(jobs.size()); ++j) {
    const Job& job = jobs[size_t(j)];
    float* out = job.dst->data();
    const size_t n = job.dst->size();
    convert_to_f32(job.src->dtype, job.src->data, out, n);
    for (size_t i = 0; i < n; ++i) {
      if (!std::isfinite(out[i])) {
        errors[size_t(j)] = fmt::format(
            "{}: tensor \"{}\" holds {} at element {}; the weights are damaged (re-download or "
            "re-convert them)",
            job.src->file, job.src->name, std::isnan(out[i]) ? "NaN" : "Inf", i);
        break;
      }
    }
  }
  for (const std::string& e : errors) {
    if (!e.empty()) throw Error(e);
  }
  if (w.lm_head.empty()) w.lm_head = w.embed_tokens;  // tie_word_embeddings
  return w;
}

std::vector<TensorEntry> llama_weights_tensors(const LlamaWeights& weights) {
  std::vector<TensorEntry> out;
  // visit_tensors hands out mutable pointers; the entries only read through them.
  auto& w = const_cast<LlamaWeights&>(weights);
  visit_tensors(w.config, &w, [&](const LlamaTensorSpec& s, std::vector<float>* v) {
    LL_CHECK(int64_t(v->size()) == numel(s.shape),
             "llama_weights_tensors: tensor \"{}\" has {} values, expected shape {}", s.name,
             v->size(), shape_str(s.shape));
    TensorEntry e;
    e.name = s.name;
    e.dtype = DType::F32;
    e.shape = s.shape;
    e.data = reinterpret_cast<const uint8_t*>(v->data());
    e.nbytes = v->size() * sizeof(float);
    e.file = "(weights in memory)";
    out.push_back(std::move(e));
  });
  return out;
}

LlamaWeights random_llama_weights(const LlamaConfig& config, uint64_t seed, float std) {
  validate_llama_config(config, "random_llama_weights");
  LlamaWeights w;
  w.config = config;
  w.layers.resize(size_t(config.num_hidden_layers));
  // Blocks of 1M elements, each its own SplitMix64 stream: filled in parallel (a 7B model's
  // 6.7e9 values in seconds), and the values depend only on the seed, never on the threads.
  constexpr int64_t kBlock = int64_t(1) << 20;
  uint64_t tensor_index = 0;
  visit_tensors(config, &w, [&](const LlamaTensorSpec& s, std::vector<float>* v) {
    const uint64_t tensor_seed = derive_seed(seed, tensor_index++);
    if (s.optional) return;  // tied lm_head: a copy of embed_tokens below
    const int64_t n = numel(s.shape);
    v->resize(size_t(n));
    if (is_norm(s.name)) {
      std::fill(v->begin(), v->end(), 1.0f);
      return;
    }
    // Biases random too (not zero), so that tests see them.
    float* out = v->data();
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < (n + kBlock - 1) / kBlock; ++b) {
      SplitMix64 rng{derive_seed(tensor_seed, uint64_t(b))};
      const int64_t end = std::min(n, (b + 1) * kBlock);
      for (int64_t i = b * kBlock; i < end; i += 2) {
        // Box-Muller: two normals from two uniforms (u1 in (0, 1] so the log is finite).
        const double u1 = 1.0 - rng.uniform(), u2 = rng.uniform();
        const double r = std::sqrt(-2.0 * std::log(u1));
        out[i] = float(std * r * std::cos(2.0 * M_PI * u2));
        if (i + 1 < end) out[i + 1] = float(std * r * std::sin(2.0 * M_PI * u2));
      }
    }
  });
  if (w.lm_head.empty()) w.lm_head = w.embed_tokens;
  return w;
}

}  // namespace ll
