#pragma once
// Tensor-core flash attention, forward and backward, for sm_80 and newer: on Hopper (compute
// capability 9.x, built with sm_90a) the wgmma + bulk-tensor-copy kernels
// (attention_tc_forward_sm90.cuh, attention_tc_backward_sm90.cuh) for dense and S2 masks,
// otherwise (and for S2Roll, or with LL_ATTENTION_KERNEL_DENY=tc-sm90) the FlashAttention-2
// style mma.sync kernels (attention_tc.cuh, attention_tc_backward.cuh). Same semantics as
// attention_forward in attention.cuh (dense, S2, S2Roll masks; GQA); bf16 storage, fp32 scores,
// softmax statistics and accumulation.
//
// Launcher checks (ll::Error): those of attention_forward (H % Hkv == 0, mask.seq_len == N,
// mask.n_heads == H, S2 modes: even H and even group_size >= 2) plus what this kernel needs:
// head_dim 64 or 128 (32 is attention_forward's only), N <= 2^31 - 257 (visit indices are
// 32-bit), and q, k, v, out 16-byte aligned (16-byte cp.async loads and vector stores).
// Enqueues on `stream` and checks the launch. N == 0 is a no-op.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/attention_pattern.h"

namespace ll::cuda {

// out: [N, H, hd] bf16; lse: [H, N] fp32 natural-log sum-exp of the scaled scores, or null.
// q: [N, H, hd]; k, v: [N, Hkv, hd] (query head h reads kv head h / (H / Hkv)).
// Scores are scaled by 1/sqrt(hd). Every element of out (and lse) is written.
// Deterministic: the same inputs give the same bytes (fixed summation order, no atomics).
void attention_forward_tc(__nv_bfloat16* out, float* lse, const __nv_bfloat16* q,
                          const __nv_bfloat16* k, const __nv_bfloat16* v, int64_t n_tokens,
                          int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
                          const AttentionPattern& mask, cudaStream_t stream);

// attention_forward_tc with the mma.sync kernel whatever the device (benchmarks compare them).
void attention_forward_tc_sm80(__nv_bfloat16* out, float* lse, const __nv_bfloat16* q,
                               const __nv_bfloat16* k, const __nv_bfloat16* v, int64_t n_tokens,
                               int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
                               const AttentionPattern& mask, cudaStream_t stream);

// Whether attention_forward_tc and attention_backward_tc run their Hopper kernels for `mask` on
// the current device (tc-sm90 available there, attention_device_support.h; mask not S2Roll).
bool attention_tc_uses_hopper(const AttentionPattern& mask);

// Tensor-core backward of attention_forward_tc (FlashAttention-2 style, bf16 -> fp32): on Hopper
// the wgmma + bulk-tensor-copy kernels (attention_tc_backward_sm90.cuh) for dense and S2 masks,
// otherwise the mma.sync ones (attention_tc_backward.cuh). Same contract as attention_backward in
// attention.cuh: dout, q, out [N, H, hd]; k, v [N, Hkv, hd]; lse [H, N] from the forward
// (required). dq [N, H, hd], dk, dv [N, Hkv, hd] are overwritten, every element written (each
// kv head sums over its group of query heads). workspace: attention_backward_workspace_bytes(N,
// H) bytes of device memory, 4-byte aligned, or null (then cudaMallocAsync / cudaFreeAsync on
// `stream`). Checks as attention_forward_tc (head_dim 64 or 128, N <= 2^31 - 257) plus: all
// bf16 tensors 16-byte aligned. Deterministic: no atomics, fixed summation order.
void attention_backward_tc(__nv_bfloat16* dq, __nv_bfloat16* dk, __nv_bfloat16* dv,
                           const __nv_bfloat16* dout, const __nv_bfloat16* q,
                           const __nv_bfloat16* k, const __nv_bfloat16* v, const __nv_bfloat16* out,
                           const float* lse, int64_t n_tokens, int64_t n_heads, int64_t n_kv_heads,
                           int64_t head_dim, const AttentionPattern& mask, void* workspace,
                           cudaStream_t stream);

// Bytes of device workspace attention_backward_tc_atomic_dq needs: D ([H, N] fp32, as
// attention_backward_workspace_bytes), then the dQ accumulator ([N, H, hd] fp32) at the next
// 256-byte boundary.
size_t attention_backward_tc_atomic_dq_workspace_bytes(int64_t n_tokens, int64_t n_heads,
                                                       int64_t head_dim);

// attention_backward_tc with atomic dQ where the Hopper kernels run (see
// attention_tc_uses_hopper): one kernel computes dK, dV and each tile's dQ share, added to an
// fp32 accumulator with atomics (5 matmuls per tile instead of 7, an [N, H, hd] fp32
// workspace); dQ may then differ from run to run in the last bits (the order of the additions),
// dK and dV stay deterministic. Elsewhere (and with LL_ATTENTION_KERNEL_DENY=tc-sm90-atomic-dq)
// it is attention_backward_tc. workspace:
// attention_backward_tc_atomic_dq_workspace_bytes(N, H, hd) bytes, 16-byte aligned, or null.
void attention_backward_tc_atomic_dq(__nv_bfloat16* dq, __nv_bfloat16* dk, __nv_bfloat16* dv,
                                     const __nv_bfloat16* dout, const __nv_bfloat16* q,
                                     const __nv_bfloat16* k, const __nv_bfloat16* v,
                                     const __nv_bfloat16* out, const float* lse, int64_t n_tokens,
                                     int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
                                     const AttentionPattern& mask, void* workspace,
                                     cudaStream_t stream);

// attention_backward_tc with the mma.sync kernels whatever the device (benchmarks compare them).
void attention_backward_tc_sm80(__nv_bfloat16* dq, __nv_bfloat16* dk, __nv_bfloat16* dv,
                                const __nv_bfloat16* dout, const __nv_bfloat16* q,
                                const __nv_bfloat16* k, const __nv_bfloat16* v,
                                const __nv_bfloat16* out, const float* lse, int64_t n_tokens,
                                int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
                                const AttentionPattern& mask, void* workspace, cudaStream_t stream);

}  // namespace ll::cuda
