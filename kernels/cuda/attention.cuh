#pragma once
// Tiled flash-style causal attention for the CUDA backend (dense, S2, S2Roll masks; GQA).
// bf16 storage, fp32 scores, softmax statistics and accumulation; the [N, N] score matrix is
// never materialised. Same semantics as kernels/cpu/attention.h (read that for the masks).
// Correctness-first version (fp32 FMA through shared memory, no tensor cores).
//
// Launchers check their arguments (ll::Error: head_dim must be 32, 64 or 128, H % Hkv == 0,
// mask.seq_len == N, mask.n_heads == H, even group_size >= 2 for S2 modes), enqueue on
// `stream` and check every launch. N == 0 is a no-op.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "kernels/attention_pattern.h"

namespace ll::cuda {

// out: [N, H, hd] bf16; lse: [H, N] fp32 natural-log sum-exp of the scaled scores, or null.
// q: [N, H, hd]; k, v: [N, Hkv, hd] (query head h reads kv head h / (H / Hkv)).
// Scores are scaled by 1/sqrt(hd). Every element of out (and lse) is written.
void attention_forward(__nv_bfloat16* out, float* lse, const __nv_bfloat16* q,
                       const __nv_bfloat16* k, const __nv_bfloat16* v, int64_t n_tokens,
                       int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
                       const AttentionPattern& mask, cudaStream_t stream);

// Bytes of fp32 scratch attention_backward needs: D = rowsum(dout * out), [H, N] floats.
size_t attention_backward_workspace_bytes(int64_t n_tokens, int64_t n_heads);

// Backward of attention_forward. Inputs dout, q, out [N, H, hd]; k, v [N, Hkv, hd]; lse [H, N]
// as written by attention_forward (required). Outputs (overwritten, every element written):
// dq [N, H, hd], dk, dv [N, Hkv, hd] (each kv head sums over its group of query heads).
// workspace: attention_backward_workspace_bytes(N, H) bytes of device memory, 4-byte aligned,
// or null, in which case the launcher takes it with cudaMallocAsync and releases it with
// cudaFreeAsync on `stream` (stream-ordered; no device synchronisation).
// Deterministic: no atomics; every output element is summed by one thread in a fixed order.
void attention_backward(__nv_bfloat16* dq, __nv_bfloat16* dk, __nv_bfloat16* dv,
                        const __nv_bfloat16* dout, const __nv_bfloat16* q, const __nv_bfloat16* k,
                        const __nv_bfloat16* v, const __nv_bfloat16* out, const float* lse,
                        int64_t n_tokens, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
                        const AttentionPattern& mask, void* workspace, cudaStream_t stream);

}  // namespace ll::cuda
