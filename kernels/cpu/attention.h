#pragma once
#include <cstdint>

#include "kernels/attention_pattern.h"

namespace ll::cpu {

// Causal softmax attention with the key set of `mask` (dense, S2, S2Roll), GQA.
// q: [N, H, hd], k, v: [Nk, Hkv, hd] (query head h reads kv head h / (H / Hkv)),
// out: [N, H, hd], lse: [H, N] natural-log sum-exp of the scaled scores, or null.
// Scores are scaled by 1/sqrt(hd). mask.n_heads must be H. A whole window: mask.seq_len = N =
// Nk. A context-parallel part (Dense and S2): queries are window positions
// [mask.query_offset, +N), keys [mask.key_offset, +Nk) with Nk = N + query_offset - key_offset;
// the keys the mask lets these queries see must all be among them.
void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                       int64_t n_tokens, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
                       const AttentionPattern& mask);

// Dense causal attention of n_queries new tokens against a key/value cache (inference):
// q, out [n_queries, H, hd] at positions [past, past + n_queries); k, v [past + n_queries,
// Hkv, hd]; query i sees keys [0, past + i]. Same scoring and softmax as attention_forward,
// so a cached pass reproduces the full dense forward.
void attention_forward_cached(float* out, const float* q, const float* k, const float* v,
                              int64_t n_queries, int64_t past, int64_t n_heads, int64_t n_kv_heads,
                              int64_t head_dim);

// Backward of attention_forward for the same mask (all modes, GQA). Inputs: dout, q, out
// [N, H, hd]; k, v [Nk, Hkv, hd]; lse [H, N] as saved by the forward. Outputs (overwritten):
// dq [N, H, hd], dk, dv [Nk, Hkv, hd] (each kv head sums over the query heads that read it; for
// a context-parallel part, over this part's queries only: other parts add theirs).
// Deterministic: no atomics, the same order of additions every run.
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q,
                        const float* k, const float* v, const float* out, const float* lse,
                        int64_t n_tokens, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
                        const AttentionPattern& mask);

}  // namespace ll::cpu
