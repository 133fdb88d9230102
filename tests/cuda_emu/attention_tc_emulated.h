#pragma once
// The tensor-core attention kernels (kernels/cuda/attention_tc_forward_kernels.cuh,
// attention_tc_backward.cuh) run in the SIMT emulator on host memory: the same device code and
// the same launch sequence as attention_forward_tc / attention_backward_tc, for testing them
// on machines without a GPU. Slow (seconds for N in the hundreds): tests only.
#include <cstddef>
#include <cstdint>
#include <vector>

#include "kernels/attention_pattern.h"
#include "tests/cuda_emu/emu_launcher.h"  // KernelRun: what each launch did

namespace ll::cuda::emu {

// bf16 values as raw bits ([N, H, hd] and [N, Hkv, hd] like the CUDA entry points).
using Bf16Bits = std::vector<uint16_t>;

struct ForwardResult {
  Bf16Bits out;            // [N, H, hd]
  std::vector<float> lse;  // [H, N]
  std::vector<KernelRun> launches;
};

// Argument checks are the CUDA entry points' (attention_args.h); outputs start poisoned
// (0xFF bytes), so an element the kernels never write stays NaN. `with_lse` false passes a
// null lse pointer (the result's lse is then empty).
ForwardResult attention_forward_tc_emulated(const Bf16Bits& q, const Bf16Bits& k, const Bf16Bits& v,
                                            int64_t n, int64_t n_heads, int64_t n_kv_heads,
                                            int64_t head_dim, const AttentionPattern& mask,
                                            bool with_lse = true);

// The Hopper forward (attention_tc_forward_sm90.cuh: wgmma, bulk tensor copies) in the
// emulator, with the emulator's tensor-map encoder. Same contract as above, except S2Roll masks
// (which attention_forward_tc gives to the mma.sync kernel): rejected.
ForwardResult attention_forward_sm90_emulated(const Bf16Bits& q, const Bf16Bits& k,
                                              const Bf16Bits& v, int64_t n, int64_t n_heads,
                                              int64_t n_kv_heads, int64_t head_dim,
                                              const AttentionPattern& mask, bool with_lse = true);

struct BackwardResult {
  Bf16Bits dq, dk, dv;              // [N, H, hd], [N, Hkv, hd], [N, Hkv, hd]
  std::vector<KernelRun> launches;  // rowdot, dK/dV, dQ (or the atomic dQ's sequence)
};

BackwardResult attention_backward_tc_emulated(const Bf16Bits& dout, const Bf16Bits& q,
                                              const Bf16Bits& k, const Bf16Bits& v,
                                              const Bf16Bits& out, const std::vector<float>& lse,
                                              int64_t n, int64_t n_heads, int64_t n_kv_heads,
                                              int64_t head_dim, const AttentionPattern& mask);

// The Hopper backward (attention_tc_backward_sm90.cuh) in the emulator; no S2Roll (as above).
// atomic_dq: the atomic-dQ launch sequence (zero, dK/dV/dQ, convert; launches then holds those
// three after rowdot) with a poisoned accumulator.
BackwardResult attention_backward_sm90_emulated(const Bf16Bits& dout, const Bf16Bits& q,
                                                const Bf16Bits& k, const Bf16Bits& v,
                                                const Bf16Bits& out, const std::vector<float>& lse,
                                                int64_t n, int64_t n_heads, int64_t n_kv_heads,
                                                int64_t head_dim, const AttentionPattern& mask,
                                                bool atomic_dq = false);

}  // namespace ll::cuda::emu
