// The decoder block schedule, forward and backward, and the training pass with layer-wise
// recomputation. Every op goes through the Backend, so CPU and CUDA run this same code.
#include <array>
#include <cmath>

#include "common/error.h"
#include "model/llama_model.h"

namespace ll {

// u = x A^T of each projection's LoRA pair, [N, r] each, kept for the backward.
struct LoraProducts {
  OwnedTensor q, k, v, o, gate, up, down;
  std::array<OwnedTensor*, 7> all() { return {&q, &k, &v, &o, &gate, &up, &down}; }
};

// One block's intermediates, kept for its backward (recomputed per layer in training).
struct LlamaModel::BlockWorkspace {
  OwnedTensor xn1, rstd1;   // [N, D] normed input, [N] its 1/rms
  OwnedTensor q, k, v;      // [N, H*hd], [N, Hkv*hd], [N, Hkv*hd]; q and k after RoPE
  OwnedTensor att, lse;     // [N, H*hd] attention output, [H, N] its log-sum-exp
  OwnedTensor x_mid;        // [N, D] residual stream after the attention sub-block
  OwnedTensor xn2, rstd2;   // [N, D], [N]
  OwnedTensor gate, up, h;  // [N, F] each; h = silu(gate) * up
  OwnedTensor x_out;        // [N, D] block output
  LoraProducts lora_u;      // x A^T of each LoRA layer (empty without LoRA)
};

// Gradient scratch for one block's backward.
struct LlamaModel::BlockGrads {
  OwnedTensor dxn;         // [N, D] gradient at a normed input
  OwnedTensor dh;          // [N, F] gradient at silu(gate) * up
  OwnedTensor datt;        // [N, H*hd]
  OwnedTensor dq, dk, dv;  // [N, H*hd], [N, Hkv*hd], [N, Hkv*hd]
  OwnedTensor du;          // [N, r] LoRA scratch (empty without LoRA)
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

void LlamaModel::block_forward(const Layer& layer, const Tensor& x_in, BlockWorkspace& ws,
                               const AttentionPattern& mask, const ForwardSpec& spec,
                               const KvSlot* cache) {
  const LlamaConfig& c = config_;
  const int64_t n = x_in.dim(0), h = c.num_attention_heads, hkv = c.num_key_value_heads;
  const int64_t hd = c.head_dim();
  const float eps = float(c.rms_norm_eps);
  // Attention sub-block: x_mid = x + o_proj(attn(rope(q), rope(k), v)).
  backend_.rmsnorm_forward(*ws.xn1, *ws.rstd1, x_in, *layer.input_layernorm.value, eps);
  linear_forward(layer.q_proj, *ws.q, *ws.xn1, *ws.lora_u.q, false);
  linear_forward(layer.k_proj, *ws.k, *ws.xn1, *ws.lora_u.k, false);
  linear_forward(layer.v_proj, *ws.v, *ws.xn1, *ws.lora_u.v, false);
  const Tensor q3 = reshaped(*ws.q, {n, h, hd}), k3 = reshaped(*ws.k, {n, hkv, hd});
  const RopeFrequencies rope = rope_frequencies_for(c, spec, n);
  backend_.rope_forward(q3, spec.position_offset, rope);
  backend_.rope_forward(k3, spec.position_offset, rope);
  const Tensor att3 = reshaped(*ws.att, {n, h, hd}), v3 = reshaped(*ws.v, {n, hkv, hd});
  if (cache == nullptr) {
    backend_.attention_forward(att3, *ws.lse, q3, k3, v3, mask);
  } else {
    // Append this call's K (after RoPE) and V to the cache, then attend over all of it.
    const int64_t past = cache->past, row = hkv * hd;
    backend_.copy(reshaped(cache->k, {n, hkv, hd}, past * row), k3);
    backend_.copy(reshaped(cache->v, {n, hkv, hd}, past * row), v3);
    backend_.attention_forward_cached(att3, q3, reshaped(cache->k, {past + n, hkv, hd}),
                                      reshaped(cache->v, {past + n, hkv, hd}), past);
  }
  backend_.copy(*ws.x_mid, x_in);
  linear_forward(layer.o_proj, *ws.x_mid, *ws.att, *ws.lora_u.o, true);
  // MLP sub-block: x_out = x_mid + down_proj(silu(gate_proj(xn2)) * up_proj(xn2)).
  backend_.rmsnorm_forward(*ws.xn2, *ws.rstd2, *ws.x_mid, *layer.post_attention_layernorm.value,
                           eps);
  linear_forward(layer.gate_proj, *ws.gate, *ws.xn2, *ws.lora_u.gate, false);
  linear_forward(layer.up_proj, *ws.up, *ws.xn2, *ws.lora_u.up, false);
  backend_.swiglu_forward(*ws.h, *ws.gate, *ws.up);
  backend_.copy(*ws.x_out, *ws.x_mid);
  linear_forward(layer.down_proj, *ws.x_out, *ws.h, *ws.lora_u.down, true);
}

void LlamaModel::block_backward(const Layer& layer, const Tensor& x_in, BlockWorkspace& ws,
                                BlockGrads& g, const Tensor& dx, const AttentionPattern& mask,
                                const ForwardSpec& spec) {
  const LlamaConfig& c = config_;
  const int64_t n = x_in.dim(0), h = c.num_attention_heads, hkv = c.num_key_value_heads;
  const int64_t hd = c.head_dim();
  // MLP sub-block. dx holds the gradient at x_out = x_mid + down(h).
  linear_backward(layer.down_proj, *g.dh, dx, *ws.h, *ws.lora_u.down, *g.du, false);
  // The gate/up buffers are not needed after this: their gradients overwrite them.
  backend_.swiglu_backward(*ws.gate, *ws.up, *g.dh, *ws.gate, *ws.up);
  linear_backward(layer.gate_proj, *g.dxn, *ws.gate, *ws.xn2, *ws.lora_u.gate, *g.du, false);
  linear_backward(layer.up_proj, *g.dxn, *ws.up, *ws.xn2, *ws.lora_u.up, *g.du, true);
  backend_.rmsnorm_backward(dx, grad_of(layer.post_attention_layernorm), *g.dxn, *ws.x_mid,
                            *layer.post_attention_layernorm.value, *ws.rstd2);
  // Attention sub-block. dx now holds the gradient at x_mid = x_in + o(att).
  linear_backward(layer.o_proj, *g.datt, dx, *ws.att, *ws.lora_u.o, *g.du, false);
  const Tensor dq3 = reshaped(*g.dq, {n, h, hd}), dk3 = reshaped(*g.dk, {n, hkv, hd});
  backend_.attention_backward(dq3, dk3, reshaped(*g.dv, {n, hkv, hd}),
                              reshaped(*g.datt, {n, h, hd}), reshaped(*ws.q, {n, h, hd}),
                              reshaped(*ws.k, {n, hkv, hd}), reshaped(*ws.v, {n, hkv, hd}),
                              reshaped(*ws.att, {n, h, hd}), *ws.lse, mask);
  const RopeFrequencies rope = rope_frequencies_for(c, spec, n);
  backend_.rope_backward(dq3, spec.position_offset, rope);
  backend_.rope_backward(dk3, spec.position_offset, rope);
  linear_backward(layer.q_proj, *g.dxn, *g.dq, *ws.xn1, *ws.lora_u.q, *g.du, false);
  linear_backward(layer.k_proj, *g.dxn, *g.dk, *ws.xn1, *ws.lora_u.k, *g.du, true);
  linear_backward(layer.v_proj, *g.dxn, *g.dv, *ws.xn1, *ws.lora_u.v, *g.du, true);
  backend_.rmsnorm_backward(dx, grad_of(layer.input_layernorm), *g.dxn, x_in,
                            *layer.input_layernorm.value, *ws.rstd1);
}

LlamaModel::BlockWorkspace LlamaModel::make_workspace(int64_t n) {
  const LlamaConfig& c = config_;
  const int64_t d = c.hidden_size, f = c.intermediate_size;
  const int64_t q_dim = c.num_attention_heads * c.head_dim(), kv_dim = c.kv_dim();
  const DType act = backend_.activation_dtype();
  BlockWorkspace ws;
  ws.xn1 = backend_.allocate({n, d}, act);
  ws.rstd1 = backend_.allocate({n}, DType::F32);
  ws.q = backend_.allocate({n, q_dim}, act);
  ws.k = backend_.allocate({n, kv_dim}, act);
  ws.v = backend_.allocate({n, kv_dim}, act);
  ws.att = backend_.allocate({n, q_dim}, act);
  ws.lse = backend_.allocate({c.num_attention_heads, n}, DType::F32);
  ws.x_mid = backend_.allocate({n, d}, act);
  ws.xn2 = backend_.allocate({n, d}, act);
  ws.rstd2 = backend_.allocate({n}, DType::F32);
  ws.gate = backend_.allocate({n, f}, act);
  ws.up = backend_.allocate({n, f}, act);
  ws.h = backend_.allocate({n, f}, act);
  ws.x_out = backend_.allocate({n, d}, act);
  if (setup_.lora) {
    for (OwnedTensor* u : ws.lora_u.all()) *u = backend_.allocate({n, setup_.lora->rank}, act);
  }
  return ws;
}

OwnedTensor LlamaModel::run_blocks(const Tensor& token_ids, const ForwardSpec& spec,
                                   std::vector<OwnedTensor>* saved_inputs, const KvCache* cache) {
  const int64_t n = token_ids.dim(0), d = config_.hidden_size;
  const DType act = backend_.activation_dtype();
  const AttentionPattern mask = make_mask(n, spec);
  BlockWorkspace ws = make_workspace(n);

  OwnedTensor x = backend_.allocate({n, d}, act);  // [N, D] residual stream
  backend_.embedding_forward(*x, *embed_tokens_.value, token_ids);
  for (size_t l = 0; l < layers_.size(); ++l) {
    const Layer& layer = layers_[l];
    if (cache != nullptr) {
      const KvSlot slot{*cache->k[l], *cache->v[l], cache->length};
      block_forward(layer, *x, ws, mask, spec, &slot);
    } else {
      block_forward(layer, *x, ws, mask, spec);
    }
    if (saved_inputs != nullptr) {
      // The block input stays alive as the saved activation; the output becomes the next input.
      saved_inputs->push_back(x);
      x = ws.x_out;
      ws.x_out = backend_.allocate({n, d}, act);
    } else {
      std::swap(x, ws.x_out);
    }
  }
  return x;
}

LossSum LlamaModel::forward_backward(std::span<const int32_t> tokens,
                                     std::span<const int32_t> targets, const ForwardSpec& spec,
                                     float loss_scale, const GradientsReady& gradients_ready) {
  LL_CHECK(setup_.training, "forward_backward: the model was not set up for training");
  const LlamaConfig& c = config_;
  const int64_t n = int64_t(tokens.size()), d = c.hidden_size, f = c.intermediate_size;
  const int64_t q_dim = c.num_attention_heads * c.head_dim(), kv_dim = c.kv_dim();
  LL_CHECK(int64_t(targets.size()) == n, "forward_backward: {} tokens but {} targets", n,
           targets.size());
  check_spec(n, spec);
  const DType act = backend_.activation_dtype();
  const float eps = float(c.rms_norm_eps);
  const AttentionPattern mask = make_mask(n, spec);

  OwnedTensor token_ids = backend_.allocate({n}, DType::I32);   // [N]
  OwnedTensor target_ids = backend_.allocate({n}, DType::I32);  // [N]
  backend_.upload_i32(*token_ids, tokens.data());
  backend_.upload_i32(*target_ids, targets.data());

  // Forward, keeping only each block's input (L x [N, D]).
  std::vector<OwnedTensor> block_inputs;
  OwnedTensor x_final = run_blocks(*token_ids, spec, &block_inputs);  // [N, D]
  OwnedTensor xn = backend_.allocate({n, d}, act);                    // [N, D]
  OwnedTensor rstd = backend_.allocate({n}, DType::F32);              // [N]
  backend_.rmsnorm_forward(*xn, *rstd, *x_final, *norm_.value, eps);

  // Loss and its gradient at the final norm's output, one classifier chunk at a time.
  OwnedTensor losses = backend_.allocate({n}, DType::F32);  // [N]
  OwnedTensor dxn = backend_.allocate({n, d}, act);         // [N, D]
  LossSum result;
  result.count = backend_.classifier_forward_backward(
      *losses, *dxn, grad_of(lm_head_), *xn, *lm_head_.value, *target_ids,
      std::max<int64_t>(1, spec.classifier_chunk), loss_scale);
  std::vector<float> host_losses(static_cast<size_t>(n));
  backend_.download_f32(host_losses.data(), *losses);
  for (float l : host_losses) result.sum += double(l);
  LL_CHECK(std::isfinite(result.sum), "the loss is not finite ({})", result.sum);

  OwnedTensor dx = backend_.allocate({n, d}, act);  // [N, D] gradient on the residual stream
  backend_.fill_zero(*dx);
  backend_.rmsnorm_backward(*dx, grad_of(norm_), *dxn, *x_final, *norm_.value, *rstd);
  x_final = {};
  xn = {};
  // Hands one group's final gradients to the hook (groups without trained tensors skipped);
  // callers build the group only when there is a hook.
  auto report = [&](const std::vector<int>& params) {
    if (!params.empty()) gradients_ready(params);
  };
  if (gradients_ready) {
    std::vector<int> head;
    if (norm_.param >= 0) head.push_back(norm_.param);
    // A tied lm_head is the embedding, whose gradient is final only after its lookup's backward.
    if (lm_head_.param >= 0 && !c.tie_word_embeddings) head.push_back(lm_head_.param);
    report(head);
  }

  // Backward through the blocks, last first, recomputing each block's forward.
  BlockWorkspace ws = make_workspace(n);
  BlockGrads g;
  g.dxn = dxn;
  g.dh = backend_.allocate({n, f}, act);
  g.datt = backend_.allocate({n, q_dim}, act);
  g.dq = backend_.allocate({n, q_dim}, act);
  g.dk = backend_.allocate({n, kv_dim}, act);
  g.dv = backend_.allocate({n, kv_dim}, act);
  if (setup_.lora) g.du = backend_.allocate({n, setup_.lora->rank}, act);
  for (size_t l = layers_.size(); l-- > 0;) {
    block_forward(layers_[l], *block_inputs[l], ws, mask, spec);
    block_backward(layers_[l], *block_inputs[l], ws, g, *dx, mask, spec);
    block_inputs[l] = {};  // freed as soon as its block is done
    if (gradients_ready) report(layer_params(layers_[l]));
  }
  if (embed_tokens_.param >= 0) {
    backend_.embedding_backward(grad_of(embed_tokens_), *dx, *token_ids);
    if (gradients_ready) report({embed_tokens_.param});
  }
  return result;
}

}  // namespace ll
