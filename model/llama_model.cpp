#include "model/llama_model.h"

#include <algorithm>

#include "common/error.h"

namespace ll {

LlamaModel::LlamaModel(Backend& backend, const LlamaWeights& w)
    : backend_(backend), config_(w.config) {
  const LlamaConfig& c = config_;
  const int64_t d = c.hidden_size, f = c.intermediate_size, v = c.vocab_size;
  const int64_t q_dim = c.num_attention_heads * c.head_dim(), kv_dim = c.kv_dim();
  embed_tokens_ = upload(w.embed_tokens, {v, d});
  for (const LlamaLayerWeights& lw : w.layers) {
    LayerTensors t;
    t.input_layernorm = upload(lw.input_layernorm, {d});
    t.q_proj = upload(lw.q_proj, {q_dim, d});
    t.k_proj = upload(lw.k_proj, {kv_dim, d});
    t.v_proj = upload(lw.v_proj, {kv_dim, d});
    t.o_proj = upload(lw.o_proj, {d, q_dim});
    t.post_attention_layernorm = upload(lw.post_attention_layernorm, {d});
    t.gate_proj = upload(lw.gate_proj, {f, d});
    t.up_proj = upload(lw.up_proj, {f, d});
    t.down_proj = upload(lw.down_proj, {d, f});
    layers_.push_back(std::move(t));
  }
  norm_ = upload(w.norm, {d});
  lm_head_ = upload(w.lm_head, {v, d});
}

OwnedTensor LlamaModel::upload(const std::vector<float>& host, std::vector<int64_t> shape) {
  OwnedTensor t = backend_.allocate(std::move(shape), backend_.activation_dtype());
  LL_CHECK(int64_t(host.size()) == t->numel(), "weight has {} elements, expected {}", host.size(),
           t->numel());
  backend_.upload_f32(*t, host.data());
  return t;
}

AttnMask LlamaModel::make_mask(int64_t n_tokens, const ForwardSpec& spec) const {
  AttnMask mask;
  mask.mode = spec.attn_mode;
  mask.seq_len = n_tokens;
  mask.n_heads = config_.num_attention_heads;
  mask.group_size = spec.group_size;
  if (spec.attn_mode != AttnMode::Dense) {
    LL_CHECK(spec.group_size >= 2 && spec.group_size % 2 == 0,
             "S2-Attn group size must be even and at least 2, got {}", spec.group_size);
    LL_CHECK(config_.num_attention_heads % 2 == 0,
             "S2-Attn splits heads into two halves; the model has {} heads",
             config_.num_attention_heads);
  }
  return mask;
}

OwnedTensor LlamaModel::final_hidden(std::span<const int32_t> tokens, const ForwardSpec& spec) {
  const LlamaConfig& c = config_;
  const int64_t n = int64_t(tokens.size());
  LL_CHECK(n > 0, "forward pass on an empty sequence");
  LL_CHECK(spec.rope_scale >= 1.0, "position interpolation factor must be >= 1, got {}",
           spec.rope_scale);
  const int64_t d = c.hidden_size, f = c.intermediate_size, h = c.num_attention_heads;
  const int64_t hkv = c.num_key_value_heads, hd = c.head_dim();
  const float eps = float(c.rms_norm_eps);
  const AttnMask mask = make_mask(n, spec);
  const DType act = backend_.activation_dtype();

  OwnedTensor token_ids = backend_.allocate({n}, DType::I32);  // [N]
  backend_.upload_i32(*token_ids, tokens.data());
  OwnedTensor x = backend_.allocate({n, d}, act);          // [N, D] residual stream
  OwnedTensor xn = backend_.allocate({n, d}, act);         // [N, D] normed block input
  OwnedTensor q = backend_.allocate({n, h * hd}, act);     // [N, H*hd]
  OwnedTensor k = backend_.allocate({n, hkv * hd}, act);   // [N, Hkv*hd]
  OwnedTensor v = backend_.allocate({n, hkv * hd}, act);   // [N, Hkv*hd]
  OwnedTensor att = backend_.allocate({n, h * hd}, act);   // [N, H*hd] attention output
  OwnedTensor gate = backend_.allocate({n, f}, act);       // [N, F]
  OwnedTensor up = backend_.allocate({n, f}, act);         // [N, F]
  const Tensor no_stats{};                                 // forward-only: no rstd / lse kept

  backend_.embedding_forward(*x, *embed_tokens_, *token_ids);
  for (const LayerTensors& layer : layers_) {
    // Attention sub-block: x += o_proj(attn(rope(q), rope(k), v)).
    backend_.rmsnorm_forward(*xn, no_stats, *x, *layer.input_layernorm, eps);
    backend_.matmul_forward(*q, *xn, *layer.q_proj, false);
    backend_.matmul_forward(*k, *xn, *layer.k_proj, false);
    backend_.matmul_forward(*v, *xn, *layer.v_proj, false);
    const Tensor q3 = reshaped(*q, {n, h, hd}), k3 = reshaped(*k, {n, hkv, hd});
    backend_.rope_forward(q3, spec.position_offset, spec.rope_scale, c.rope_theta);
    backend_.rope_forward(k3, spec.position_offset, spec.rope_scale, c.rope_theta);
    backend_.attention_forward(reshaped(*att, {n, h, hd}), no_stats, q3, k3,
                               reshaped(*v, {n, hkv, hd}), mask);
    backend_.matmul_forward(*x, *att, *layer.o_proj, /*accumulate=*/true);
    // MLP sub-block: x += down_proj(silu(gate_proj(xn)) * up_proj(xn)).
    backend_.rmsnorm_forward(*xn, no_stats, *x, *layer.post_attention_layernorm, eps);
    backend_.matmul_forward(*gate, *xn, *layer.gate_proj, false);
    backend_.matmul_forward(*up, *xn, *layer.up_proj, false);
    backend_.swiglu_forward(*gate, *gate, *up);
    backend_.matmul_forward(*x, *gate, *layer.down_proj, /*accumulate=*/true);
  }
  backend_.rmsnorm_forward(*xn, no_stats, *x, *norm_, eps);
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
      *losses, *hidden, *lm_head_, *target_ids, std::max<int64_t>(1, spec.classifier_chunk));
  LL_CHECK(labelled == n - 1, "classifier scored {} positions, expected {}", labelled, n - 1);
  std::vector<float> out(size_t(n), 0.0f);
  backend_.download_f32(out.data(), *losses);
  out.pop_back();
  return out;
}

std::vector<float> LlamaModel::logits(std::span<const int32_t> tokens, const ForwardSpec& spec) {
  const int64_t n = int64_t(tokens.size()), v = config_.vocab_size;
  OwnedTensor hidden = final_hidden(tokens, spec);  // [N, D]
  OwnedTensor out = backend_.allocate({n, v}, backend_.activation_dtype());  // [N, V]
  backend_.matmul_forward(*out, *hidden, *lm_head_, false);
  std::vector<float> host(size_t(n * v));
  backend_.download_f32(host.data(), *out);
  return host;
}

}  // namespace ll
