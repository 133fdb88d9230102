#include "model/lora_merge.h"

#include <cmath>
#include <cstring>
#include <map>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "common/error.h"

namespace ll {
namespace {

constexpr const char* kPeftPrefix = "base_model.model.";

std::string shape_str(const std::vector<int64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

// A base tensor merge_adapter may write: its fp32 values inside LlamaWeights and HF shape.
struct Target {
  float* data = nullptr;
  std::vector<int64_t> shape;
};

// Every tensor of `w` by HF name (lm_head included even when tied: it is a separate copy).
std::map<std::string, Target> targets_of(LlamaWeights& w) {
  std::map<std::string, Target> out;
  for (const TensorEntry& t : llama_weights_tensors(w)) {
    // The views point into `w`, which the caller may modify.
    out[t.name] = {const_cast<float*>(reinterpret_cast<const float*>(t.data)), t.shape};
  }
  return out;
}

// One LoRA pair and the linear weight it adapts.
struct Pair {
  const HostTensor* a = nullptr;  // [r, in]
  const HostTensor* b = nullptr;  // [out, r]
  std::string a_key, b_key;
  Target* weight = nullptr;  // [out, in]
  std::string weight_name;
};

int64_t numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// Pairs the adapter's LoRA matrices with the weights they adapt, checking names and shapes.
std::vector<Pair> pair_lora(const AdapterDir& adapter, std::map<std::string, Target>& targets,
                            const LlamaConfig& config) {
  std::map<std::string, Pair> pairs;  // by weight name
  for (const auto& [key, t] : adapter.lora_tensors) {
    int64_t layer = 0;
    std::string module;
    char which = 0;
    LL_CHECK(parse_peft_lora_key(key, &layer, &module, &which),
             "adapter tensor \"{}\" is not a LoRA matrix (expected names like {})", key,
             peft_lora_key(0, "q_proj", 'A'));
    // base_model.model.<weight path>.lora_A.weight -> <weight path>.weight
    const std::string a_key = peft_lora_key(layer, module, 'A');
    const std::string name =
        a_key.substr(std::strlen(kPeftPrefix),
                     a_key.size() - std::strlen(kPeftPrefix) - std::strlen(".lora_A.weight")) +
        ".weight";
    auto it = targets.find(name);
    LL_CHECK(it != targets.end(),
             "adapter tensor \"{}\" adapts \"{}\", which the model does not have (it has {} "
             "layers): adapter for another base model?",
             key, name, config.num_hidden_layers);
    Pair& p = pairs[name];
    p.weight_name = name;
    p.weight = &it->second;
    (which == 'A' ? p.a : p.b) = &t;
    (which == 'A' ? p.a_key : p.b_key) = key;
  }
  std::vector<Pair> out;
  for (auto& [name, p] : pairs) {
    LL_CHECK(p.a && p.b, "adapter has \"{}\" but not its {} partner: the adapter is incomplete",
             p.a ? p.a_key : p.b_key, p.a ? "lora_B" : "lora_A");
    const Target& w = *p.weight;
    for (const HostTensor* t : {p.a, p.b}) {
      const std::string& key = t == p.a ? p.a_key : p.b_key;
      LL_CHECK(t->shape.size() == 2 && int64_t(t->values.size()) == numel(t->shape),
               "adapter tensor \"{}\" has shape {} and {} values; a LoRA matrix is 2-D", key,
               shape_str(t->shape), t->values.size());
    }
    LL_CHECK(p.a->shape[0] == p.b->shape[1],
             "adapter tensors \"{}\" {} and \"{}\" {} disagree on the rank ({} vs {})", p.a_key,
             shape_str(p.a->shape), p.b_key, shape_str(p.b->shape), p.a->shape[0], p.b->shape[1]);
    LL_CHECK(p.a->shape[0] == adapter.lora.rank,
             "adapter tensor \"{}\" has rank {} but the adapter config says r = {}", p.a_key,
             p.a->shape[0], adapter.lora.rank);
    LL_CHECK(p.b->shape[0] == w.shape[0] && p.a->shape[1] == w.shape[1],
             "adapter tensors \"{}\" {} and \"{}\" {} do not fit \"{}\" {} (B A must be [out, "
             "in]): adapter for another base model?",
             p.a_key, shape_str(p.a->shape), p.b_key, shape_str(p.b->shape), name,
             shape_str(w.shape));
    out.push_back(p);
  }
  return out;
}

// W [out, in] += scaling * B [out, r] @ A [r, in], each element's sum in double, rounded once.
// Returns the first weight element that became non-finite, or -1.
int64_t merge_pair(const Pair& p, double scaling) {
  const int64_t out = p.weight->shape[0], in = p.weight->shape[1], r = p.a->shape[0];
  const float* a = p.a->values.data();
  const float* b = p.b->values.data();
  float* w = p.weight->data;
  int64_t bad = -1;
#pragma omp parallel
  {
    std::vector<double> acc(static_cast<size_t>(in));  // [in] one row of B @ A
#pragma omp for schedule(static) reduction(max : bad)
    for (int64_t o = 0; o < out; ++o) {
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t k = 0; k < r; ++k) {
        const double bk = b[o * r + k];
        const float* ak = a + k * in;
        for (int64_t i = 0; i < in; ++i) acc[size_t(i)] += bk * double(ak[i]);
      }
      float* row = w + o * in;
      for (int64_t i = 0; i < in; ++i) {
        row[i] = float(double(row[i]) + scaling * acc[size_t(i)]);
        if (!std::isfinite(row[i])) bad = std::max(bad, o * in + i);
      }
    }
  }
  return bad;
}

}  // namespace

void merge_adapter(LlamaWeights& weights, const AdapterDir& adapter) {
  std::map<std::string, Target> targets = targets_of(weights);
  const std::vector<Pair> pairs = pair_lora(adapter, targets, weights.config);
  for (const auto& [name, t] : adapter.trainable_params) {
    auto it = targets.find(name);
    LL_CHECK(it != targets.end(),
             "trainable tensor \"{}\" is not a tensor of the model (it has {} layers): adapter "
             "for another base model?",
             name, weights.config.num_hidden_layers);
    LL_CHECK(t.shape == it->second.shape && int64_t(t.values.size()) == numel(t.shape),
             "trainable tensor \"{}\" has shape {} but the model's is {}: adapter for another "
             "base model?",
             name, shape_str(t.shape), shape_str(it->second.shape));
  }
  if (!pairs.empty()) {
    LL_CHECK(adapter.lora.rank >= 1 && std::isfinite(adapter.lora.scaling()),
             "adapter has LoRA rank {} and lora_alpha {}: no valid scaling", adapter.lora.rank,
             adapter.lora.alpha);
  }

  // Everything checked: now change the weights.
  for (const auto& [name, t] : adapter.trainable_params) {
    std::copy(t.values.begin(), t.values.end(), targets.at(name).data);
  }
  // A tied model: training used one tensor for the embedding and the LM head, so a trained
  // embedding is the LM head too and the model stays tied. Only an adapter that trained an
  // lm_head of its own unties it.
  const auto& trained = adapter.trainable_params;
  if (weights.config.tie_word_embeddings) {
    if (trained.count("lm_head.weight")) {
      weights.config.tie_word_embeddings = false;
    } else {
      weights.lm_head = weights.embed_tokens;
    }
  }
  const double scaling = adapter.lora.scaling();
  for (const Pair& p : pairs) {
    const int64_t bad = merge_pair(p, scaling);
    LL_CHECK(bad < 0,
             "merging \"{}\" and \"{}\" into \"{}\": element {} became {}; the adapter "
             "is damaged or diverged",
             p.a_key, p.b_key, p.weight_name, bad, p.weight->data[bad < 0 ? 0 : bad]);
  }
}

}  // namespace ll
