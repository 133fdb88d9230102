// Inference with a key/value cache: the same block schedule as training and evaluation
// (block_forward with a cache slot), run on the new tokens only.

#include "common/error.h"
#include "model/llama_model.h"

namespace ll {

LlamaModel::KvCache LlamaModel::make_kv_cache(int64_t capacity) {
  LL_CHECK(capacity >= 1, "a key/value cache needs room for at least 1 token, asked for {}",
           capacity);
  KvCache cache;
  cache.capacity = capacity;
  for (size_t l = 0; l < layers_.size(); ++l) {
    cache.k.push_back(backend_.allocate({capacity, config_.kv_dim()},
                                        backend_.activation_dtype()));  // [capacity, Hkv*hd]
    cache.v.push_back(backend_.allocate({capacity, config_.kv_dim()},
                                        backend_.activation_dtype()));  // [capacity, Hkv*hd]
  }
  return cache;
}

std::vector<float> LlamaModel::forward_cached(std::span<const int32_t> tokens, KvCache& cache,
                                              const ForwardSpec& spec, bool all_logits) {
  const int64_t n = int64_t(tokens.size()), v = config_.vocab_size, d = config_.hidden_size;
  LL_CHECK(n > 0, "cached forward pass on no tokens");
  LL_CHECK(spec.context == nullptr,
           "cached forward passes take whole sequences (no context parts)");
  LL_CHECK(spec.attn_mode == AttnMode::Dense,
           "cached forward passes use dense causal attention (S2-Attn is for training only)");
  LL_CHECK(cache.k.size() == layers_.size() && cache.v.size() == layers_.size(),
           "the key/value cache has {} layers, the model {}", cache.k.size(), layers_.size());
  LL_CHECK(cache.length >= 0 && cache.length <= cache.capacity - n,
           "the key/value cache holds {} of {} tokens and has no room for {} more; make a larger "
           "cache (the prompt plus the tokens to generate)",
           cache.length, cache.capacity, n);
  for (int64_t i = 0; i < n; ++i) {
    LL_CHECK(tokens[size_t(i)] >= 0 && tokens[size_t(i)] < v,
             "token id {} at position {} is outside the vocabulary [0, {})", tokens[size_t(i)],
             cache.length + i, v);
  }
  ForwardSpec at = spec;
  at.position_offset = cache.length;
  OwnedTensor hidden = final_hidden(tokens, at, &cache);  // [n, D]
  // Only the rows asked for go through the LM head (decode needs the last one).
  const int64_t rows = all_logits ? n : 1;
  const Tensor x = reshaped(*hidden, {rows, d}, (n - rows) * d);  // [rows, D]
  OwnedTensor out = backend_.allocate({rows, v}, DType::F32);     // [rows, V]
  backend_.matmul_forward(*out, x, *lm_head_.value, false);
  std::vector<float> host(size_t(rows * v));
  backend_.download_f32(host.data(), *out);
  cache.length += n;
  return host;
}

}  // namespace ll
