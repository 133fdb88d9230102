#include "model/llama_model.h"

#include <algorithm>
#include <cmath>

#include <fmt/ranges.h>

#include "common/error.h"
#include "common/random.h"
#include "kernels/attention_pattern.h"

namespace ll {

LlamaModel::LlamaModel(Backend& backend, const LlamaWeights& w, const ModelSetup& setup)
    : backend_(backend), config_(w.config), setup_(setup) {
  const LlamaConfig& c = config_;
  if (setup_.lora) setup_.lora->validate();
  const int64_t d = c.hidden_size, f = c.intermediate_size, v = c.vocab_size;
  const int64_t q_dim = c.num_attention_heads * c.head_dim(), kv_dim = c.kv_dim();
  const TrainableSet& tr = setup_.trainable;
  embed_tokens_ = make_weight(w.embed_tokens, {v, d}, "model.embed_tokens.weight", tr.embed_tokens);
  for (size_t i = 0; i < w.layers.size(); ++i) {
    const LlamaLayerWeights& lw = w.layers[i];
    const int64_t li = int64_t(i);
    const std::string prefix = "model.layers." + std::to_string(i) + ".";
    Layer t;
    t.input_layernorm =
        make_weight(lw.input_layernorm, {d}, prefix + "input_layernorm.weight", tr.norms);
    t.q_proj = make_linear(lw.q_proj, lw.q_bias, {q_dim, d}, li, "q_proj");
    t.k_proj = make_linear(lw.k_proj, lw.k_bias, {kv_dim, d}, li, "k_proj");
    t.v_proj = make_linear(lw.v_proj, lw.v_bias, {kv_dim, d}, li, "v_proj");
    t.o_proj = make_linear(lw.o_proj, lw.o_bias, {d, q_dim}, li, "o_proj");
    t.post_attention_layernorm = make_weight(lw.post_attention_layernorm, {d},
                                             prefix + "post_attention_layernorm.weight", tr.norms);
    t.gate_proj = make_linear(lw.gate_proj, {}, {f, d}, li, "gate_proj");
    t.up_proj = make_linear(lw.up_proj, {}, {f, d}, li, "up_proj");
    t.down_proj = make_linear(lw.down_proj, {}, {d, f}, li, "down_proj");
    layers_.push_back(std::move(t));
  }
  norm_ = make_weight(w.norm, {d}, "model.norm.weight", tr.norms);
  if (c.tie_word_embeddings) {
    // One tensor for both uses, as in transformers: a trained embedding (LoRA+) gets the
    // gradient of the classifier too, and is stored and written once.
    lm_head_ = embed_tokens_;
  } else {
    // lm_head stays frozen in LoRA+ (as in LongLoRA); full training (pretraining) trains it.
    lm_head_ = make_weight(w.lm_head, {v, d}, "lm_head.weight", tr.linear);
  }
}

int LlamaModel::add_param(const std::string& name, std::vector<int64_t> shape,
                          const std::vector<float>& initial) {
  TrainableParam p;
  p.name = name;
  p.shape = shape;
  p.master = backend_.allocate(shape, DType::F32);
  LL_CHECK(int64_t(initial.size()) == p.master->numel(), "{} has {} elements, expected {}", name,
           initial.size(), p.master->numel());
  backend_.upload_f32(*p.master, initial.data());
  if (backend_.activation_dtype() == DType::F32) {
    p.value = p.master;  // the forward reads the master weights directly
  } else {
    p.value = backend_.allocate(shape, backend_.activation_dtype());
    backend_.upload_f32(*p.value, initial.data());
  }
  if (setup_.training) {
    p.grad = backend_.allocate(shape, DType::F32);
    backend_.fill_zero(*p.grad);
    if (setup_.optimizer_moments) {
      p.exp_avg = backend_.allocate(shape, DType::F32);
      p.exp_avg_sq = backend_.allocate(shape, DType::F32);
      backend_.fill_zero(*p.exp_avg);
      backend_.fill_zero(*p.exp_avg_sq);
    }
  }
  params_.push_back(std::move(p));
  return int(params_.size()) - 1;
}

LlamaModel::Weight LlamaModel::make_weight(const std::vector<float>& host,
                                           std::vector<int64_t> shape, const std::string& name,
                                           bool trained) {
  Weight w;
  if (trained) {
    w.param = add_param(name, std::move(shape), host);
    w.value = params_[size_t(w.param)].value;
    return w;
  }
  w.value = backend_.allocate(std::move(shape), backend_.activation_dtype());
  LL_CHECK(int64_t(host.size()) == w.value->numel(), "{} has {} elements, expected {}", name,
           host.size(), w.value->numel());
  backend_.upload_f32(*w.value, host.data());
  return w;
}

LlamaModel::Linear LlamaModel::make_linear(const std::vector<float>& host,
                                           const std::vector<float>& bias,
                                           std::vector<int64_t> shape, int64_t layer,
                                           const std::string& module) {
  const bool attn =
      module == "q_proj" || module == "k_proj" || module == "v_proj" || module == "o_proj";
  const std::string prefix =
      "model.layers." + std::to_string(layer) + (attn ? ".self_attn." : ".mlp.") + module;
  Linear lin;
  lin.module = module;
  const int64_t out = shape[0], in = shape[1];
  lin.weight = make_weight(host, std::move(shape), prefix + ".weight", setup_.trainable.linear);
  if (!bias.empty()) lin.bias = make_weight(bias, {out}, prefix + ".bias", setup_.trainable.bias);
  if (setup_.lora && setup_.lora->targets_module(module)) {
    const int64_t r = setup_.lora->rank;
    // PEFT's init: A ~ kaiming_uniform(a = sqrt(5)) = U(-1/sqrt(in), 1/sqrt(in)); B = 0, so
    // the adapter starts as the identity change.
    std::vector<float> a(size_t(r * in));
    SplitMix64 rng{derive_seed(setup_.seed, uint64_t(params_.size()))};
    const double bound = 1.0 / std::sqrt(double(in));
    for (float& x : a) x = float((2.0 * rng.uniform() - 1.0) * bound);
    lin.lora_a = add_param(peft_lora_key(layer, module, 'A'), {r, in}, a);
    lin.lora_b = add_param(peft_lora_key(layer, module, 'B'), {out, r},
                           std::vector<float>(size_t(out * r), 0.0f));
  }
  return lin;
}

void LlamaModel::zero_grads() {
  for (TrainableParam& p : params_) {
    LL_CHECK(p.grad.view.data != nullptr, "zero_grads: the model was not set up for training");
    backend_.fill_zero(*p.grad);
  }
}

std::vector<int> LlamaModel::layer_params(const Layer& layer) const {
  std::vector<int> params;
  auto add = [&](int index) {
    if (index >= 0) params.push_back(index);
  };
  add(layer.input_layernorm.param);
  add(layer.post_attention_layernorm.param);
  for (const Linear* lin : {&layer.q_proj, &layer.k_proj, &layer.v_proj, &layer.o_proj,
                            &layer.gate_proj, &layer.up_proj, &layer.down_proj}) {
    add(lin->weight.param);
    add(lin->bias.param);
    add(lin->lora_a);
    add(lin->lora_b);
  }
  std::sort(params.begin(), params.end());
  return params;
}

const Tensor& LlamaModel::grad_of(const Weight& w) const {
  static const Tensor none{};
  if (w.param < 0) return none;
  return *params_[size_t(w.param)].grad;
}

void LlamaModel::set_param(TrainableParam& p, const std::vector<float>& values) {
  LL_CHECK(int64_t(values.size()) == p.master->numel(), "{}: got {} values, expected {}", p.name,
           values.size(), p.master->numel());
  backend_.upload_f32(*p.master, values.data());
  if (p.value.view.data != p.master.view.data) backend_.upload_f32(*p.value, values.data());
}

AdapterDir LlamaModel::export_adapter(const std::string& base_model) const {
  AdapterDir out;
  if (setup_.lora) out.lora = *setup_.lora;
  out.base_model = base_model;
  for (const TrainableParam& p : params_) {
    HostTensor t;
    t.shape = p.shape;
    t.values.resize(size_t(p.master->numel()));
    backend_.download_f32(t.values.data(), *p.master);
    int64_t layer = 0;
    std::string module;
    char which = 0;
    if (parse_peft_lora_key(p.name, &layer, &module, &which)) {
      out.lora_tensors.emplace(p.name, std::move(t));
    } else {
      out.trainable_params.emplace(p.name, std::move(t));
    }
  }
  return out;
}

void LlamaModel::load_adapter(const AdapterDir& adapter) {
  const bool has_lora = !adapter.lora_tensors.empty();
  LL_CHECK(!has_lora || setup_.lora, "the adapter holds LoRA matrices but the model has no LoRA");
  if (setup_.lora && has_lora) {
    const LoraConfig& mine = *setup_.lora;
    LL_CHECK(adapter.lora.rank == mine.rank,
             "the adapter's LoRA rank {} differs from this run's {}", adapter.lora.rank, mine.rank);
    LL_CHECK(adapter.lora.alpha == mine.alpha,
             "the adapter's lora_alpha {} differs from this run's {}", adapter.lora.alpha,
             mine.alpha);
  }
  // Every trained tensor by name, and the frozen base tensors trainable_params may replace.
  auto find_param = [&](const std::string& name) -> TrainableParam* {
    for (TrainableParam& p : params_)
      if (p.name == name) return &p;
    return nullptr;
  };
  for (TrainableParam& p : params_) {
    int64_t layer = 0;
    std::string module;
    char which = 0;
    if (!parse_peft_lora_key(p.name, &layer, &module, &which)) continue;
    auto it = adapter.lora_tensors.find(p.name);
    LL_CHECK(it != adapter.lora_tensors.end(), "the adapter has no tensor {} (LoRA targets {})",
             p.name, fmt::join(setup_.lora->targets, ","));
    LL_CHECK(it->second.shape == p.shape, "adapter tensor {} has shape [{}], the model needs [{}]",
             p.name, fmt::join(it->second.shape, ", "), fmt::join(p.shape, ", "));
    set_param(p, it->second.values);
  }
  for (const auto& [name, t] : adapter.lora_tensors) {
    LL_CHECK(find_param(name) != nullptr,
             "the adapter's tensor {} has no place in this model (another base model, or LoRA "
             "targets that differ from --lora-targets?)",
             name);
  }
  for (const auto& [name, t] : adapter.trainable_params) {
    if (TrainableParam* p = find_param(name)) {
      LL_CHECK(t.shape == p->shape, "trainable tensor {} has shape [{}], the model needs [{}]",
               name, fmt::join(t.shape, ", "), fmt::join(p->shape, ", "));
      set_param(*p, t.values);
      continue;
    }
    // A frozen base tensor (e.g. evaluating LoRA+ weights without training them).
    const Weight* w = nullptr;
    if (name == "model.embed_tokens.weight") w = &embed_tokens_;
    if (name == "model.norm.weight") w = &norm_;
    for (size_t i = 0; i < layers_.size() && w == nullptr; ++i) {
      const Layer& l = layers_[i];
      const std::string prefix = "model.layers." + std::to_string(i) + ".";
      if (name == prefix + "input_layernorm.weight") w = &l.input_layernorm;
      if (name == prefix + "post_attention_layernorm.weight") w = &l.post_attention_layernorm;
      for (const Linear* lin : {&l.q_proj, &l.k_proj, &l.v_proj, &l.o_proj}) {
        if (lin->bias.value.view.data != nullptr &&
            name == prefix + "self_attn." + lin->module + ".bias")
          w = &lin->bias;
      }
    }
    LL_CHECK(w != nullptr,
             "trainable_params holds {}, which is not an embedding, norm or bias of this model",
             name);
    LL_CHECK(t.shape == w->value->shape, "trainable tensor {} has shape [{}], the model needs [{}]",
             name, fmt::join(t.shape, ", "), fmt::join(w->value->shape, ", "));
    backend_.upload_f32(*w->value, t.values.data());
  }
}

AttentionPattern LlamaModel::make_mask(int64_t n_tokens, const ForwardSpec& spec) const {
  AttentionPattern mask;
  mask.mode = spec.attn_mode;
  mask.seq_len = n_tokens;
  mask.n_heads = config_.num_attention_heads;
  mask.group_size = spec.group_size;
  if (spec.context != nullptr) {
    const KeyValueExchange& cx = *spec.context;
    LL_CHECK(cx.part_tokens() == n_tokens && cx.part_begin() == spec.position_offset,
             "context parallelism: a part of {} tokens from position {}, the call has {} from {}",
             cx.part_tokens(), cx.part_begin(), n_tokens, spec.position_offset);
    LL_CHECK(spec.attn_mode != AttnMode::S2Roll,
             "context parallelism: the roll form has no parts (its wrap-around needs both ends "
             "of the window)");
    mask.seq_len = cx.window_tokens();
    mask.query_offset = cx.part_begin();
    mask.key_offset = cx.key_begin();
    mask.window_part = true;
  }
  if (spec.attn_mode != AttnMode::Dense) {
    S2GroupInput s2;
    s2.group_size = spec.group_size;
    s2.n_heads = config_.num_attention_heads;
    check_s2_group(s2);
  }
  return mask;
}

void LlamaModel::check_spec(int64_t n_tokens, const ForwardSpec& spec) const {
  LL_CHECK(n_tokens > 0, "forward pass on an empty sequence");
  check_sliding_window(config_, spec.position_offset + n_tokens, "this forward pass");
  LL_CHECK(spec.tile_tokens >= 0, "token tiles of {} rows (0: whole)", spec.tile_tokens);
  LL_CHECK(spec.offloaded_layers >= 0 && spec.offloaded_layers < config_.num_hidden_layers,
           "{} offloaded layers: a model of {} layers offloads at most {} (the last layer's "
           "input stays on the device)",
           spec.offloaded_layers, config_.num_hidden_layers, config_.num_hidden_layers - 1);
  validate_rope_scaling(spec.rope, "forward pass RoPE scaling");
}

RopeFrequencies rope_frequencies_for(const LlamaConfig& config, const ForwardSpec& spec,
                                     int64_t n_tokens) {
  // A context-parallel part applies the window's scaling (dynamic NTK sees the whole window).
  const int64_t seq_len =
      spec.context != nullptr ? spec.context->window_tokens() : spec.position_offset + n_tokens;
  return rope_frequencies(spec.rope, config.rope_theta, config.head_dim(),
                          config.max_position_embeddings, seq_len);
}

OwnedTensor LlamaModel::final_hidden(std::span<const int32_t> tokens, const ForwardSpec& spec,
                                     const KvCache* cache) {
  const int64_t n = int64_t(tokens.size()), d = config_.hidden_size;
  check_spec(n, spec);
  OwnedTensor token_ids = backend_.allocate({n}, DType::I32);  // [N]
  backend_.upload_i32(*token_ids, tokens.data());
  OwnedTensor x = run_blocks(*token_ids, spec, cache);                      // [N, D]
  OwnedTensor xn = backend_.allocate({n, d}, backend_.activation_dtype());  // [N, D]
  backend_.rmsnorm_forward(*xn, Tensor{}, *x, *norm_.value, float(config_.rms_norm_eps));
  return xn;
}

std::vector<float> LlamaModel::next_token_losses(std::span<const int32_t> tokens,
                                                 const ForwardSpec& spec) {
  const int64_t n = int64_t(tokens.size());
  LL_CHECK(n >= 2, "need at least 2 tokens to score next-token predictions, got {}", n);
  OwnedTensor hidden = final_hidden(tokens, spec);  // [N, D]
  // Position t predicts token t+1; the last position has no label.
  std::vector<int32_t> targets(tokens.begin() + 1, tokens.end());
  targets.push_back(-1);
  OwnedTensor target_ids = backend_.allocate({n}, DType::I32);  // [N]
  backend_.upload_i32(*target_ids, targets.data());
  OwnedTensor losses = backend_.allocate({n}, DType::F32);  // [N]
  const int64_t labelled = backend_.classifier_forward(
      *losses, *hidden, *lm_head_.value, *target_ids, std::max<int64_t>(1, spec.classifier_chunk));
  LL_CHECK(labelled == n - 1, "classifier scored {} positions, expected {}", labelled, n - 1);
  std::vector<float> out(size_t(n), 0.0f);
  backend_.download_f32(out.data(), *losses);
  out.pop_back();
  return out;
}

std::vector<float> LlamaModel::logits(std::span<const int32_t> tokens, const ForwardSpec& spec) {
  const int64_t n = int64_t(tokens.size()), v = config_.vocab_size;
  OwnedTensor hidden = final_hidden(tokens, spec);          // [N, D]
  OwnedTensor out = backend_.allocate({n, v}, DType::F32);  // [N, V] fp32 logits on every backend
  backend_.matmul_forward(*out, *hidden, *lm_head_.value, false);
  std::vector<float> host(size_t(n * v));
  backend_.download_f32(host.data(), *out);
  return host;
}

}  // namespace ll
