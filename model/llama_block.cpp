// The decoder block schedule, forward and backward, and the training pass with layer-wise
// recomputation, token tiles and activation offload. Every op goes through the Backend, so CPU
// and CUDA run this same code.
//
// Tiles: every stage but attention is row-wise, so it runs over tiles of ForwardSpec::tile_tokens
// rows with [tile, ...] buffers; only q, k, v, the attention output, their gradients and the
// log-sum-exp exist for all N tokens. A row's values do not depend on the tiling; parameter
// gradients (sums over tokens) are accumulated tile after tile.
#include <algorithm>
#include <array>
#include <cmath>

#include "common/error.h"
#include "model/llama_model.h"
#include "model/saved_block_inputs.h"

namespace ll {

namespace {

// Rows [r0, r0 + n) of a row-major [N, C] tensor, as [n, C].
Tensor rows(const Tensor& t, int64_t r0, int64_t n) {
  const int64_t c = t.numel() / t.dim(0);
  return reshaped(t, {n, c}, r0 * c);
}

// The first n rows of a tile buffer (empty: a tensor the layer does not have, e.g. no LoRA).
Tensor head(const OwnedTensor& t, int64_t n) {
  if (t.view.data == nullptr) return Tensor{};
  return t->shape.size() == 1 ? reshaped(*t, {n}) : rows(*t, 0, n);
}

// Rows per tile for n tokens: spec.tile_tokens, or all of them (0, or a tile >= n).
int64_t tile_rows(const ForwardSpec& spec, int64_t n) {
  return spec.tile_tokens <= 0 || spec.tile_tokens >= n ? n : spec.tile_tokens;
}

// fn(r0, rows) for consecutive tiles covering [0, n), the last one ragged.
template <typename Fn>
void for_each_tile(int64_t n, int64_t tile, Fn&& fn) {
  for (int64_t r0 = 0; r0 < n; r0 += tile) fn(r0, std::min(tile, n - r0));
}

}  // namespace

// u = x A^T of each projection's LoRA pair, [T, r] each (one tile's rows).
struct LoraProducts {
  OwnedTensor q, k, v, o, gate, up, down;
  std::array<OwnedTensor*, 7> all() { return {&q, &k, &v, &o, &gate, &up, &down}; }
};

// What attention needs whole, kept from one block's forward for its backward.
struct LlamaModel::AttentionTensors {
  OwnedTensor q, k, v;   // [N, H*hd], [N, Hkv*hd], [N, Hkv*hd]; q and k after RoPE
  OwnedTensor att, lse;  // [N, H*hd] attention output, [H, N] its log-sum-exp (F32)
  // Context parallelism: the keys and values the attention reads, [key rows, Hkv*hd]: this
  // part's and the other parts' the exchange brings (empty otherwise: k and v themselves).
  OwnedTensor k_all, v_all;
};

// Their gradients.
struct LlamaModel::AttentionGrads {
  OwnedTensor dq, dk, dv;      // [N, H*hd], [N, Hkv*hd], [N, Hkv*hd]
  OwnedTensor datt;            // [N, H*hd]
  OwnedTensor dk_all, dv_all;  // [key rows, Hkv*hd] with context parallelism (else empty)
};

// One tile's intermediates of the row-wise stages.
struct LlamaModel::TileWorkspace {
  OwnedTensor xn, rstd;     // [T, D] a normed input, [T] its 1/rms (F32)
  OwnedTensor gate, up, h;  // [T, F] each; h = silu(gate) * up
  LoraProducts lora_u;      // x A^T of each LoRA layer (empty without LoRA)
};

// One tile's backward scratch.
struct LlamaModel::TileGrads {
  OwnedTensor x_mid;  // [T, D] recomputed residual stream after the attention sub-block
  OwnedTensor dxn;    // [T, D] gradient at a normed input
  OwnedTensor dh;     // [T, F] gradient at silu(gate) * up
  OwnedTensor du;     // [T, r] LoRA scratch (empty without LoRA)
};

void LlamaModel::linear_forward(const Linear& lin, const Tensor& out, const Tensor& x,
                                const Tensor& u, bool accumulate) {
  backend_.matmul_forward(out, x, *lin.weight.value, accumulate);
  if (lin.bias.value.view.data != nullptr) backend_.add_bias(out, *lin.bias.value);
  if (lin.lora_a < 0) return;
  // y += scaling * (x A^T) B^T; u = x A^T is kept for the backward.
  backend_.matmul_forward(u, x, *params_[size_t(lin.lora_a)].value, false);
  backend_.matmul_forward(out, u, *params_[size_t(lin.lora_b)].value, true,
                          float(setup_.lora->scaling()));
}

void LlamaModel::lora_product(const Linear& lin, const Tensor& u, const Tensor& x) {
  if (lin.lora_a >= 0) backend_.matmul_forward(u, x, *params_[size_t(lin.lora_a)].value, false);
}

void LlamaModel::linear_backward(const Linear& lin, const Tensor& dx, const Tensor& dout,
                                 const Tensor& x, const Tensor& u, const Tensor& du,
                                 bool accumulate) {
  if (lin.weight.param >= 0) backend_.matmul_backward_weight(grad_of(lin.weight), dout, x, true);
  if (lin.bias.param >= 0) backend_.bias_backward(grad_of(lin.bias), dout);
  backend_.matmul_backward_input(dx, dout, *lin.weight.value, accumulate);
  if (lin.lora_a < 0) return;
  const TrainableParam& a = params_[size_t(lin.lora_a)];
  const TrainableParam& b = params_[size_t(lin.lora_b)];
  const float s = float(setup_.lora->scaling());
  backend_.matmul_backward_weight(*b.grad, dout, u, true, s);    // dB += s dout^T u
  backend_.matmul_backward_input(du, dout, *b.value, false, s);  // du = s dout B
  backend_.matmul_backward_weight(*a.grad, du, x, true);         // dA += du^T x
  backend_.matmul_backward_input(dx, du, *a.value, true);        // dx += du A
}

void LlamaModel::attention_forward_part(const Layer& layer, const Tensor& x_in,
                                        AttentionTensors& at, TileWorkspace& tw,
                                        const AttentionPattern& mask, const ForwardSpec& spec,
                                        const KvSlot* cache) {
  const LlamaConfig& c = config_;
  const int64_t n = x_in.dim(0), h = c.num_attention_heads, hkv = c.num_key_value_heads;
  const int64_t hd = c.head_dim();
  const float eps = float(c.rms_norm_eps);
  for_each_tile(n, tw.xn->dim(0), [&](int64_t r0, int64_t m) {
    const Tensor xn = head(tw.xn, m);
    backend_.rmsnorm_forward(xn, head(tw.rstd, m), rows(x_in, r0, m), *layer.input_layernorm.value,
                             eps);
    linear_forward(layer.q_proj, rows(*at.q, r0, m), xn, head(tw.lora_u.q, m), false);
    linear_forward(layer.k_proj, rows(*at.k, r0, m), xn, head(tw.lora_u.k, m), false);
    linear_forward(layer.v_proj, rows(*at.v, r0, m), xn, head(tw.lora_u.v, m), false);
  });
  const Tensor q3 = reshaped(*at.q, {n, h, hd}), k3 = reshaped(*at.k, {n, hkv, hd});
  const RopeFrequencies rope = rope_frequencies_for(c, spec, n);
  backend_.rope_forward(q3, spec.position_offset, rope);
  backend_.rope_forward(k3, spec.position_offset, rope);
  const Tensor att3 = reshaped(*at.att, {n, h, hd}), v3 = reshaped(*at.v, {n, hkv, hd});
  if (spec.context != nullptr) {
    // The other parts' keys and values join this part's (after RoPE at window positions).
    const int64_t rows = spec.context->key_rows();
    spec.context->gather(backend_, *at.k, *at.v, *at.k_all, *at.v_all);
    backend_.attention_forward(att3, *at.lse, q3, reshaped(*at.k_all, {rows, hkv, hd}),
                               reshaped(*at.v_all, {rows, hkv, hd}), mask);
    return;
  }
  if (cache == nullptr) {
    backend_.attention_forward(att3, *at.lse, q3, k3, v3, mask);
    return;
  }
  // Append this call's K (after RoPE) and V to the cache, then attend over all of it.
  const int64_t past = cache->past, row = hkv * hd;
  backend_.copy(reshaped(cache->k, {n, hkv, hd}, past * row), k3);
  backend_.copy(reshaped(cache->v, {n, hkv, hd}, past * row), v3);
  backend_.attention_forward_cached(att3, q3, reshaped(cache->k, {past + n, hkv, hd}),
                                    reshaped(cache->v, {past + n, hkv, hd}), past);
}

void LlamaModel::block_forward(const Layer& layer, const Tensor& x_in, const Tensor& x_out,
                               AttentionTensors& at, TileWorkspace& tw,
                               const AttentionPattern& mask, const ForwardSpec& spec,
                               const KvSlot* cache) {
  attention_forward_part(layer, x_in, at, tw, mask, spec, cache);
  const int64_t n = x_in.dim(0);
  const float eps = float(config_.rms_norm_eps);
  const bool in_place = x_out.data == x_in.data;
  // Per tile: x_mid = x + o_proj(att), then x_out = x_mid + down_proj(silu(gate_proj(xn2)) *
  // up_proj(xn2)) with xn2 = rmsnorm(x_mid), both written into x_out's rows.
  for_each_tile(n, tw.xn->dim(0), [&](int64_t r0, int64_t m) {
    const Tensor out = rows(x_out, r0, m), xn = head(tw.xn, m);
    const Tensor gate = head(tw.gate, m), up = head(tw.up, m), hh = head(tw.h, m);
    if (!in_place) backend_.copy(out, rows(x_in, r0, m));
    linear_forward(layer.o_proj, out, rows(*at.att, r0, m), head(tw.lora_u.o, m), true);
    backend_.rmsnorm_forward(xn, head(tw.rstd, m), out, *layer.post_attention_layernorm.value, eps);
    linear_forward(layer.gate_proj, gate, xn, head(tw.lora_u.gate, m), false);
    linear_forward(layer.up_proj, up, xn, head(tw.lora_u.up, m), false);
    backend_.swiglu_forward(hh, gate, up);
    linear_forward(layer.down_proj, out, hh, head(tw.lora_u.down, m), true);
  });
}

void LlamaModel::block_backward(const Layer& layer, const Tensor& x_in, AttentionTensors& at,
                                AttentionGrads& ag, TileWorkspace& tw, TileGrads& tg,
                                const Tensor& dx, const AttentionPattern& mask,
                                const ForwardSpec& spec) {
  const LlamaConfig& c = config_;
  const int64_t n = x_in.dim(0), h = c.num_attention_heads, hkv = c.num_key_value_heads;
  const int64_t hd = c.head_dim(), tile = tw.xn->dim(0);
  const float eps = float(c.rms_norm_eps);
  // Recompute the attention half: q, k, v, the attention output and its log-sum-exp.
  attention_forward_part(layer, x_in, at, tw, mask, spec, nullptr);

  // MLP and o_proj, tile by tile: recompute the tile's forward (x_mid, xn2, gate, up, h; the
  // block output itself is not needed), then its backward. dx's rows hold the gradient at the
  // block output on entry and at x_mid = x_in + o(att) after.
  for_each_tile(n, tile, [&](int64_t r0, int64_t m) {
    const Tensor x_mid = head(tg.x_mid, m), xn = head(tw.xn, m), rstd = head(tw.rstd, m);
    const Tensor gate = head(tw.gate, m), up = head(tw.up, m), hh = head(tw.h, m);
    const Tensor att = rows(*at.att, r0, m), d = rows(dx, r0, m);
    const Tensor dxn = head(tg.dxn, m), dh = head(tg.dh, m), du = head(tg.du, m);
    const LoraProducts& u = tw.lora_u;
    backend_.copy(x_mid, rows(x_in, r0, m));
    linear_forward(layer.o_proj, x_mid, att, head(u.o, m), true);
    backend_.rmsnorm_forward(xn, rstd, x_mid, *layer.post_attention_layernorm.value, eps);
    linear_forward(layer.gate_proj, gate, xn, head(u.gate, m), false);
    linear_forward(layer.up_proj, up, xn, head(u.up, m), false);
    backend_.swiglu_forward(hh, gate, up);
    lora_product(layer.down_proj, head(u.down, m), hh);

    linear_backward(layer.down_proj, dh, d, hh, head(u.down, m), du, false);
    // The gate/up buffers are not needed after this: their gradients overwrite them.
    backend_.swiglu_backward(gate, up, dh, gate, up);
    linear_backward(layer.gate_proj, dxn, gate, xn, head(u.gate, m), du, false);
    linear_backward(layer.up_proj, dxn, up, xn, head(u.up, m), du, true);
    backend_.rmsnorm_backward(d, grad_of(layer.post_attention_layernorm), dxn, x_mid,
                              *layer.post_attention_layernorm.value, rstd);
    linear_backward(layer.o_proj, rows(*ag.datt, r0, m), d, att, head(u.o, m), du, false);
  });

  // Attention and RoPE, whole.
  const Tensor dq3 = reshaped(*ag.dq, {n, h, hd}), dk3 = reshaped(*ag.dk, {n, hkv, hd});
  if (spec.context != nullptr) {
    // Over this part's and the received keys; their gradients go back to their owners.
    const int64_t rows = spec.context->key_rows();
    backend_.attention_backward(
        dq3, reshaped(*ag.dk_all, {rows, hkv, hd}), reshaped(*ag.dv_all, {rows, hkv, hd}),
        reshaped(*ag.datt, {n, h, hd}), reshaped(*at.q, {n, h, hd}),
        reshaped(*at.k_all, {rows, hkv, hd}), reshaped(*at.v_all, {rows, hkv, hd}),
        reshaped(*at.att, {n, h, hd}), *at.lse, mask);
    spec.context->return_gradients(backend_, *ag.dk_all, *ag.dv_all, *ag.dk, *ag.dv);
  } else {
    backend_.attention_backward(dq3, dk3, reshaped(*ag.dv, {n, hkv, hd}),
                                reshaped(*ag.datt, {n, h, hd}), reshaped(*at.q, {n, h, hd}),
                                reshaped(*at.k, {n, hkv, hd}), reshaped(*at.v, {n, hkv, hd}),
                                reshaped(*at.att, {n, h, hd}), *at.lse, mask);
  }
  const RopeFrequencies rope = rope_frequencies_for(c, spec, n);
  backend_.rope_backward(dq3, spec.position_offset, rope);
  backend_.rope_backward(dk3, spec.position_offset, rope);

  // q, k, v projections and the input norm, tile by tile (xn1 and the LoRA products
  // recomputed from the saved input).
  for_each_tile(n, tile, [&](int64_t r0, int64_t m) {
    const Tensor x = rows(x_in, r0, m), xn = head(tw.xn, m), rstd = head(tw.rstd, m);
    const Tensor dxn = head(tg.dxn, m), du = head(tg.du, m);
    const LoraProducts& u = tw.lora_u;
    backend_.rmsnorm_forward(xn, rstd, x, *layer.input_layernorm.value, eps);
    lora_product(layer.q_proj, head(u.q, m), xn);
    lora_product(layer.k_proj, head(u.k, m), xn);
    lora_product(layer.v_proj, head(u.v, m), xn);
    linear_backward(layer.q_proj, dxn, rows(*ag.dq, r0, m), xn, head(u.q, m), du, false);
    linear_backward(layer.k_proj, dxn, rows(*ag.dk, r0, m), xn, head(u.k, m), du, true);
    linear_backward(layer.v_proj, dxn, rows(*ag.dv, r0, m), xn, head(u.v, m), du, true);
    backend_.rmsnorm_backward(rows(dx, r0, m), grad_of(layer.input_layernorm), dxn, x,
                              *layer.input_layernorm.value, rstd);
  });
}

LlamaModel::AttentionTensors LlamaModel::make_attention_tensors(int64_t n,
                                                                const ForwardSpec& spec) {
  const LlamaConfig& c = config_;
  const int64_t q_dim = c.num_attention_heads * c.head_dim(), kv_dim = c.kv_dim();
  const DType act = backend_.activation_dtype();
  AttentionTensors at;
  at.q = backend_.allocate({n, q_dim}, act);
  at.k = backend_.allocate({n, kv_dim}, act);
  at.v = backend_.allocate({n, kv_dim}, act);
  at.att = backend_.allocate({n, q_dim}, act);
  at.lse = backend_.allocate({c.num_attention_heads, n}, DType::F32);
  if (spec.context != nullptr) {
    at.k_all = backend_.allocate({spec.context->key_rows(), kv_dim}, act);
    at.v_all = backend_.allocate({spec.context->key_rows(), kv_dim}, act);
  }
  return at;
}

LlamaModel::AttentionGrads LlamaModel::make_attention_grads(int64_t n, const ForwardSpec& spec) {
  const LlamaConfig& c = config_;
  const int64_t q_dim = c.num_attention_heads * c.head_dim(), kv_dim = c.kv_dim();
  const DType act = backend_.activation_dtype();
  AttentionGrads ag;
  ag.dq = backend_.allocate({n, q_dim}, act);
  ag.dk = backend_.allocate({n, kv_dim}, act);
  ag.dv = backend_.allocate({n, kv_dim}, act);
  ag.datt = backend_.allocate({n, q_dim}, act);
  if (spec.context != nullptr) {
    ag.dk_all = backend_.allocate({spec.context->key_rows(), kv_dim}, act);
    ag.dv_all = backend_.allocate({spec.context->key_rows(), kv_dim}, act);
  }
  return ag;
}

LlamaModel::TileWorkspace LlamaModel::make_tile_workspace(int64_t t) {
  const int64_t d = config_.hidden_size, f = config_.intermediate_size;
  const DType act = backend_.activation_dtype();
  TileWorkspace tw;
  tw.xn = backend_.allocate({t, d}, act);
  tw.rstd = backend_.allocate({t}, DType::F32);
  tw.gate = backend_.allocate({t, f}, act);
  tw.up = backend_.allocate({t, f}, act);
  tw.h = backend_.allocate({t, f}, act);
  if (setup_.lora) {
    for (OwnedTensor* u : tw.lora_u.all()) *u = backend_.allocate({t, setup_.lora->rank}, act);
  }
  return tw;
}

LlamaModel::TileGrads LlamaModel::make_tile_grads(int64_t t) {
  const int64_t d = config_.hidden_size, f = config_.intermediate_size;
  const DType act = backend_.activation_dtype();
  TileGrads tg;
  tg.x_mid = backend_.allocate({t, d}, act);
  tg.dxn = backend_.allocate({t, d}, act);
  tg.dh = backend_.allocate({t, f}, act);
  if (setup_.lora) tg.du = backend_.allocate({t, setup_.lora->rank}, act);
  return tg;
}

OwnedTensor LlamaModel::run_blocks(const Tensor& token_ids, const ForwardSpec& spec,
                                   const KvCache* cache) {
  const int64_t n = token_ids.dim(0), d = config_.hidden_size;
  const AttentionPattern mask = make_mask(n, spec);
  AttentionTensors at = make_attention_tensors(n, spec);
  TileWorkspace tw = make_tile_workspace(tile_rows(spec, n));
  OwnedTensor x = backend_.allocate({n, d}, backend_.activation_dtype());  // [N, D] residual
  backend_.embedding_forward(*x, *embed_tokens_.value, token_ids);
  for (size_t l = 0; l < layers_.size(); ++l) {
    if (cache != nullptr) {
      const KvSlot slot{*cache->k[l], *cache->v[l], cache->length};
      block_forward(layers_[l], *x, *x, at, tw, mask, spec, &slot);
    } else {
      block_forward(layers_[l], *x, *x, at, tw, mask, spec);
    }
  }
  return x;
}

LossSum LlamaModel::forward_backward(std::span<const int32_t> tokens,
                                     std::span<const int32_t> targets, const ForwardSpec& spec,
                                     float loss_scale, const GradientsReady& gradients_ready) {
  LL_CHECK(setup_.training, "forward_backward: the model was not set up for training");
  const LlamaConfig& c = config_;
  const int64_t n = int64_t(tokens.size()), d = c.hidden_size;
  const int64_t n_layers = int64_t(layers_.size());
  LL_CHECK(int64_t(targets.size()) == n, "forward_backward: {} tokens but {} targets", n,
           targets.size());
  check_spec(n, spec);
  const DType act = backend_.activation_dtype();
  const float eps = float(c.rms_norm_eps);
  const AttentionPattern mask = make_mask(n, spec);
  const int64_t tile = tile_rows(spec, n);

  OwnedTensor token_ids = backend_.allocate({n}, DType::I32);   // [N]
  OwnedTensor target_ids = backend_.allocate({n}, DType::I32);  // [N]
  backend_.upload_i32(*token_ids, tokens.data());
  backend_.upload_i32(*target_ids, targets.data());

  // Host memory for the offloaded inputs, kept across steps: [rows, D] per offloaded layer.
  const int64_t offloaded = spec.offloaded_layers;
  if (int64_t(offload_host_.size()) < offloaded ||
      (offloaded > 0 && offload_host_[0]->dim(0) < n)) {
    offload_host_.clear();  // freed before the larger set is pinned
    for (int64_t l = 0; l < offloaded; ++l)
      offload_host_.push_back(backend_.allocate_host({n, d}, act));
  }
  SavedBlockInputs saved(backend_, n_layers, offloaded, n, d, offload_host_);

  // Forward, keeping only each block's input (L x [N, D], on the device or in host memory).
  Tensor x_final;  // [N, D] the last block's output
  {
    AttentionTensors at = make_attention_tensors(n, spec);
    TileWorkspace tw = make_tile_workspace(tile);
    Tensor x = saved.first_input();
    backend_.embedding_forward(x, *embed_tokens_.value, *token_ids);
    for (int64_t l = 0; l < n_layers; ++l) {
      const Tensor out = saved.begin_forward_layer(l);
      block_forward(layers_[size_t(l)], x, out, at, tw, mask, spec);
      x = out;
    }
    x_final = x;
  }

  // Loss and its gradient at the final norm's output, one classifier chunk at a time.
  LossSum result;
  OwnedTensor dx = {};  // [N, D] gradient on the residual stream
  {
    OwnedTensor xn = backend_.allocate({n, d}, act);        // [N, D]
    OwnedTensor rstd = backend_.allocate({n}, DType::F32);  // [N]
    backend_.rmsnorm_forward(*xn, *rstd, x_final, *norm_.value, eps);
    OwnedTensor dxn = backend_.allocate({n, d}, act);  // [N, D]
    {
      OwnedTensor losses = backend_.allocate({n}, DType::F32);  // [N]
      result.count = backend_.classifier_forward_backward(
          *losses, *dxn, grad_of(lm_head_), *xn, *lm_head_.value, *target_ids,
          std::max<int64_t>(1, spec.classifier_chunk), loss_scale);
      std::vector<float> host_losses(static_cast<size_t>(n));
      backend_.download_f32(host_losses.data(), *losses);
      for (float l : host_losses) result.sum += double(l);
    }
    LL_CHECK(std::isfinite(result.sum), "the loss is not finite ({})", result.sum);
    dx = backend_.allocate({n, d}, act);
    backend_.fill_zero(*dx);
    backend_.rmsnorm_backward(*dx, grad_of(norm_), *dxn, x_final, *norm_.value, *rstd);
  }
  saved.release_final();
  // Hands one group's final gradients to the hook (groups without trained tensors skipped);
  // callers build the group only when there is a hook.
  auto report = [&](const std::vector<int>& params) {
    if (!params.empty()) gradients_ready(params);
  };
  if (gradients_ready) {
    std::vector<int> head_params;
    if (norm_.param >= 0) head_params.push_back(norm_.param);
    // A tied lm_head is the embedding, whose gradient is final only after its lookup's backward.
    if (lm_head_.param >= 0 && !c.tie_word_embeddings) head_params.push_back(lm_head_.param);
    report(head_params);
  }

  // Backward through the blocks, last first, recomputing each block's forward.
  {
    AttentionTensors at = make_attention_tensors(n, spec);
    AttentionGrads ag = make_attention_grads(n, spec);
    TileWorkspace tw = make_tile_workspace(tile);
    TileGrads tg = make_tile_grads(tile);
    for (int64_t l = n_layers; l-- > 0;) {
      const Tensor x_in = saved.begin_backward_layer(l);
      block_backward(layers_[size_t(l)], x_in, at, ag, tw, tg, *dx, mask, spec);
      saved.end_backward_layer(l);  // a device input is freed as soon as its block is done
      if (gradients_ready) report(layer_params(layers_[size_t(l)]));
    }
  }
  if (embed_tokens_.param >= 0) {
    backend_.embedding_backward(grad_of(embed_tokens_), *dx, *token_ids);
    if (gradients_ready) report({embed_tokens_.param});
  }
  return result;
}

}  // namespace ll
