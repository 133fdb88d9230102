#pragma once
// Cached attention for inference (generation): n new queries at positions [past, past + n)
// against a key/value cache of past + n rows, dense causal (query i sees keys [0, past + i]);
// GQA. bf16 storage, fp32 scores, softmax statistics and accumulation. Same semantics as
// kernels/cpu/attention.h attention_forward_cached.
//
// Decode (n = 1, up to 100k+ keys) is the case it is built for: the keys are split into
// chunks (flash-decoding), one block per (query, kv head, chunk, up to 8 query heads of that
// kv head's group) so a short query row still fills the GPU and each K/V row read serves the
// whole group; per-chunk online-softmax partials are merged by a second kernel. A prefill
// from an empty cache (past == 0, n > 1) is plain causal attention and goes to the tiled
// kernel of attention.cuh instead. n > 1 with past > 0 (a prompt prefilled in chunks) runs
// the decode kernel per query: correct, not fast.
//
// The launcher checks its arguments (ll::Error: head_dim 32, 64 or 128, H % Hkv == 0,
// past >= 0, 4-byte aligned tensors), enqueues on `stream` and checks every launch. n == 0 is
// a no-op.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace ll::cuda {

// Bytes of fp32 scratch for the chunk partials (0 when one chunk per query suffices):
// splits x [n, H] x (hd + 2) floats.
size_t attention_forward_cached_workspace_bytes(int64_t n_queries, int64_t past, int64_t n_heads,
                                                int64_t n_kv_heads, int64_t head_dim);

// out: [n, H, hd] bf16, every element written. q: [n, H, hd]; k, v: [past + n, Hkv, hd]
// (query head h reads kv head h / (H / Hkv)); scores scaled by 1/sqrt(hd).
// workspace: attention_forward_cached_workspace_bytes(...) bytes of device memory, 4-byte
// aligned, or null, in which case the launcher takes it with cudaMallocAsync and releases it
// with cudaFreeAsync on `stream`. Deterministic: fixed summation order, no atomics.
void attention_forward_cached(__nv_bfloat16* out, const __nv_bfloat16* q, const __nv_bfloat16* k,
                              const __nv_bfloat16* v, int64_t n_queries, int64_t past,
                              int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
                              void* workspace, cudaStream_t stream);

}  // namespace ll::cuda
