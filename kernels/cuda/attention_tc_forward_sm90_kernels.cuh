#pragma once
// Hopper (sm_90a) flash attention forward kernel: the mma.sync forward's masks and contract
// (attention_tc.cuh) with wgmma and bulk tensor copies (TMA) on mbarriers, and its host launch
// sequence. No S2Roll (attention_forward_tc sends it to the mma.sync kernel). Internal:
// included by attention_tc_forward.cu (nvcc; the body is compiled for sm_90a only) and by the
// SIMT emulator's host build, which run the same kernel and sequence.
// Design (warpgroups, panel layout, copy stages): docs/subsystems/attention-kernels.md.
#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "kernels/attention_pattern.h"
#include "kernels/cuda/attention_tc_common.cuh"
#include "kernels/cuda/attention_tc_sm90_common.cuh"
#include "kernels/cuda/dynamic_smem.cuh"
#include "kernels/cuda/tc_ptx.cuh"
#include "kernels/cuda/tc_ptx_sm90.cuh"

namespace ll::cuda::tc::sm90 {

using bf16 = __nv_bfloat16;

namespace fwd {

constexpr int kWarpgroups = 2;
constexpr int kThreads = 128 * kWarpgroups;
constexpr int kWarps = kBlockWarps;
static_assert(kThreads == 32 * kWarps, "2 warpgroups");
constexpr int kBq = 64 * kWarpgroups;  // query rows per block
constexpr int kBk = 128;               // keys per tile

template <int HD>
struct Sm90Shape {
  static_assert(HD == 64 || HD == 128, "head dim 64 or 128");
  static constexpr int kPanels = HD / 64;
  static constexpr int kQPanelBytes = kBq * kPanelRowBytes;
  static constexpr int kKvPanelBytes = kBk * kPanelRowBytes;
  static constexpr int kQBytes = kPanels * kQPanelBytes;
  static constexpr int kKvBytes = kPanels * kKvPanelBytes;  // one K or V tile
  static constexpr int kBarrierOffset = kQBytes + 4 * kKvBytes;
  static constexpr int kSmemBytes = kBarrierOffset + 3 * 8 + 1024;  // + alignment slack
  static constexpr int kKSteps = HD / 16;                           // k16 steps of Q K^T
};

// Grid (ceil(N / 128), H), kThreads threads, Sm90Shape::kSmemBytes of dynamic shared memory.
// tm_q: q as the 3-d tensor (HD, H, N), box (64, 1, 128); tm_k, tm_v: (HD, Hkv, N), box
// (64, 1, 128); bf16, 128-byte swizzle, zero fill. Fragment notation: lane = 4 g + q4; a
// thread holds S / O rows g and g + 8 of its warp's 16.
template <int HD>
__global__ void __launch_bounds__(kThreads, 1)
    attention_forward_sm90_kernel(bf16* __restrict__ out, float* __restrict__ lse,
                                  const __grid_constant__ CUtensorMap tm_q,
                                  const __grid_constant__ CUtensorMap tm_k,
                                  const __grid_constant__ CUtensorMap tm_v, int n, int n_heads,
                                  int n_kv_heads, AttentionPattern mask, float scale,
                                  float scale_log2) {
#if LL_SM90A_DEVICE_CODE
  using S = Sm90Shape<HD>;
  __shared__ int s_range[kWarps][2];  // per warp: first and last visit of its rows

  const int tid = int(threadIdx.x), lane = tid & 31, warp = tid >> 5;
  const int wg = warp >> 2;
  const int g = lane >> 2, q4 = lane & 3;
  const int h = int(blockIdx.y);
  const int hk = h / (n_heads / n_kv_heads);
  const int q0 = (int(gridDim.x) - 1 - int(blockIdx.x)) * kBq;  // last tile first
  const int warp_row0 = warp * 16;                              // block row of its first row
  const int64_t q_stride = int64_t(n_heads) * HD;

  unsigned char* smem;
  const uint32_t s_q = aligned_smem(smem);
  const uint32_t s_kv = s_q + S::kQBytes;  // stage b: K at s_kv + 2b tiles, V right after
  const uint32_t bar_q = s_q + S::kBarrierOffset, bar_kv = bar_q + 8;  // stage b: bar_kv + 8b

  // Key ranges (visit indices = key positions) of this thread's two rows; rows past N: [1, 0].
  int row_first[2], row_last[2];
  const WarpRanges wr = thread_row_ranges([&](int i) { return attn_key_range(mask, h, i); },
                                          q0 + warp_row0 + g, n, row_first, row_last);
  publish_ranges(s_range, warp, lane, wr);
  init_mbarriers(tid, bar_q, 3);
  __syncthreads();
  // The block's visit range (union over its warps; row q0 < N is valid: non-empty) and this
  // warpgroup's [first, last] bounds, which decide its tile skips.
  int v_lo, v_hi, wg_lo, wg_hi;
  block_ranges(s_range, wg, v_lo, v_hi, wg_lo, wg_hi);
  const int n_tiles = (v_hi - v_lo) / kBk + 1;

  // K and V tile of visit indices [v0, v0 + 128) -> stage `stage` (thread 0 only).
  auto load_kv = [&](int stage, int v0) {
    const uint32_t bar = bar_kv + 8u * uint32_t(stage);
    const uint32_t s_k = s_kv + uint32_t(stage) * 2u * S::kKvBytes, s_v = s_k + S::kKvBytes;
    mbar_arrive_expect_tx(bar, 2u * S::kKvBytes);
#pragma unroll
    for (int p = 0; p < S::kPanels; ++p) {
      tma_load_3d(s_k + p * S::kKvPanelBytes, &tm_k, 64 * p, hk, v0, bar);
      tma_load_3d(s_v + p * S::kKvPanelBytes, &tm_v, 64 * p, hk, v0, bar);
    }
  };
  if (tid == 0) {
    mbar_arrive_expect_tx(bar_q, S::kQBytes);
#pragma unroll
    for (int p = 0; p < S::kPanels; ++p)
      tma_load_3d(s_q + p * S::kQPanelBytes, &tm_q, 64 * p, h, q0, bar_q);
    load_kv(0, v_lo);
  }

  float o_acc[S::kPanels][32];
  float m_run[2], l_run[2];  // running max (raw score) and this lane's partial sum, per row
#pragma unroll
  for (int p = 0; p < S::kPanels; ++p)
#pragma unroll
    for (int i = 0; i < 32; ++i) o_acc[p][i] = 0.0f;
#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    m_run[hf] = -INFINITY;
    l_run[hf] = 0.0f;
  }
  mbar_wait(bar_q, 0);

#pragma unroll 1
  for (int t = 0; t < n_tiles; ++t) {
    const int v0 = v_lo + t * kBk;
    if (tid == 0 && t + 1 < n_tiles) load_kv((t + 1) & 1, v0 + kBk);
    mbar_wait(bar_kv + 8u * uint32_t(t & 1), uint32_t(t >> 1) & 1u);

    const bool skip = v0 > wg_hi || v0 + (kBk - 1) < wg_lo;  // warpgroup-uniform
    if (!skip) {
      const bool full = wr.f_max <= v0 && v0 + (kBk - 1) <= wr.l_min;  // warp-uniform
      const uint32_t s_k = s_kv + uint32_t(t & 1) * 2u * S::kKvBytes, s_v = s_k + S::kKvBytes;

      // S = Q K^T (raw scores, fp32). s[i]: row g + 8 ((i % 4) / 2), key 8 (i / 4) + 2 q4 + i % 2.
      float s[64];
      wgmma_fence();
#pragma unroll
      for (int ks = 0; ks < S::kKSteps; ++ks) {
        const uint32_t off = uint32_t(ks % 4) * 32u;  // k16 step within the 128-byte row
        const uint64_t da = smem_desc_sw128(
            s_q + (ks / 4) * S::kQPanelBytes + wg * 64 * kPanelRowBytes + off, 16, 1024);
        const uint64_t db = smem_desc_sw128(s_k + (ks / 4) * S::kKvPanelBytes + off, 16, 1024);
        wgmma_m64n128k16_ss(s, da, db, ks > 0 ? 1 : 0);
      }
      wgmma_commit();
      wgmma_wait<0>();
#pragma unroll
      for (int i = 0; i < 64; ++i) fence_operand(s[i]);

      if (!full) {
#pragma unroll
        for (int i = 0; i < 64; ++i) {
          const int hf = (i % 4) / 2, c = 8 * (i / 4) + 2 * q4 + (i % 2);
          if (c < row_first[hf] - v0 || c > row_last[hf] - v0) s[i] = -INFINITY;
        }
      }

      // Online softmax: p = exp2(s * scale_log2 - m * scale_log2); O and l rescaled by alpha.
#pragma unroll
      for (int hf = 0; hf < 2; ++hf) {
        float mx = -INFINITY;
#pragma unroll
        for (int j = 0; j < 16; ++j)
          mx = fmaxf(mx, fmaxf(s[4 * j + 2 * hf], s[4 * j + 2 * hf + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float m_new = fmaxf(m_run[hf], mx);
        // A row with nothing visible yet keeps m = -inf; subtract 0 then (no inf - inf NaN).
        const float m_base = m_new == -INFINITY ? 0.0f : m_new * scale_log2;
        const float alpha = exp2f(m_run[hf] * scale_log2 - m_base);
        m_run[hf] = m_new;
        float sum = 0.0f;
#pragma unroll
        for (int j = 0; j < 16; ++j) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const float p = exp2f(fmaf(s[4 * j + 2 * hf + e], scale_log2, -m_base));
            s[4 * j + 2 * hf + e] = p;
            sum += p;
          }
        }
        l_run[hf] = l_run[hf] * alpha + sum;
#pragma unroll
        for (int p = 0; p < S::kPanels; ++p)
#pragma unroll
          for (int j = 0; j < 8; ++j) {
            o_acc[p][4 * j + 2 * hf] *= alpha;
            o_acc[p][4 * j + 2 * hf + 1] *= alpha;
          }
      }

      // P as bf16 A fragments (k16 step kc: S tiles 2kc, 2kc + 1), then O += P V.
      uint32_t pa[kBk / 16][4];
#pragma unroll
      for (int kc = 0; kc < kBk / 16; ++kc) {
        pa[kc][0] = pack_bf16(s[8 * kc + 0], s[8 * kc + 1]);
        pa[kc][1] = pack_bf16(s[8 * kc + 2], s[8 * kc + 3]);
        pa[kc][2] = pack_bf16(s[8 * kc + 4], s[8 * kc + 5]);
        pa[kc][3] = pack_bf16(s[8 * kc + 6], s[8 * kc + 7]);
      }
      wgmma_fence();  // orders the writes of pa and o_acc above before the wgmma reads
#pragma unroll
      for (int kc = 0; kc < kBk / 16; ++kc) {
#pragma unroll
        for (int p = 0; p < S::kPanels; ++p) {
          // V rows 16kc.. of panel p: 8-key groups 1024 bytes apart (SBO; LBO set equal, see
          // the header comment: one panel per instruction).
          const uint64_t dv =
              smem_desc_sw128(s_v + p * S::kKvPanelBytes + kc * 16 * kPanelRowBytes, 1024, 1024);
          wgmma_m64n64k16_rs_nmajor(o_acc[p], pa[kc], dv, 1);
        }
      }
      wgmma_commit();
      wgmma_wait<0>();
#pragma unroll
      for (int p = 0; p < S::kPanels; ++p)
#pragma unroll
        for (int i = 0; i < 32; ++i) fence_operand(o_acc[p][i]);
    }
    __syncthreads();  // stage t & 1 is refilled by the next iteration's copy
  }

  // Epilogue: O / l as bf16 through this warp's own rows of the Q tile (read by this
  // warpgroup's wgmma only, all retired), then 16-byte stores of whole rows.
  float inv[2];
#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    float l = l_run[hf];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    inv[hf] = l > 0.0f ? 1.0f / l : 0.0f;  // every valid row sees itself: l >= 1
    const int i = q0 + warp_row0 + g + 8 * hf;
    if (lse != nullptr && q4 == 0 && i < n)
      lse[int64_t(h) * n + i] = l > 0.0f ? m_run[hf] * scale + logf(l) : -INFINITY;
  }
  store_acc_rows<HD, kBq>(smem, o_acc, inv, lane, warp_row0, q0, n, out + int64_t(h) * HD,
                          q_stride);
#elif defined(__CUDA_ARCH__)
  __trap();  // code without sm_90a is never picked (attention_device_support.h); loud if it is
#endif  // LL_SM90A_DEVICE_CODE
}

template <int HD, typename Launcher>
void run_forward_sm90_hd(const Launcher& launch, bf16* out, float* lse, const CUtensorMap& tm_q,
                         const CUtensorMap& tm_k, const CUtensorMap& tm_v, int n, int n_heads,
                         int n_kv_heads, const AttentionPattern& mask) {
  using S = Sm90Shape<HD>;
  const float scale = float(1.0 / std::sqrt(double(HD)));
  const float scale_log2 = float(1.4426950408889634 / std::sqrt(double(HD)));  // log2(e)/sqrt
  const dim3 grid(unsigned((int64_t(n) + kBq - 1) / kBq), unsigned(n_heads));
  launch("attention_forward_sm90_kernel", attention_forward_sm90_kernel<HD>, grid, dim3(kThreads),
         size_t(S::kSmemBytes), out, lse, tm_q, tm_k, tm_v, n, n_heads, n_kv_heads, mask, scale,
         scale_log2);
}

}  // namespace fwd

// The launch sequence of the Hopper forward after the argument checks (N > 0, no S2Roll mask,
// 16-byte aligned tensors). Returns false (and launches nothing) when `encode` rejects a map.
template <typename Launcher, typename Encode>
bool run_forward_sm90(const Launcher& launch, Encode encode, bf16* out, float* lse, const bf16* q,
                      const bf16* k, const bf16* v, int n, int n_heads, int n_kv_heads,
                      int head_dim, const AttentionPattern& mask) {
  CUtensorMap tm_q, tm_k, tm_v;
  if (!make_head_map(encode, tm_q, q, n, n_heads, head_dim, fwd::kBq) ||
      !make_head_map(encode, tm_k, k, n, n_kv_heads, head_dim, fwd::kBk) ||
      !make_head_map(encode, tm_v, v, n, n_kv_heads, head_dim, fwd::kBk))
    return false;
  if (head_dim == 64)
    fwd::run_forward_sm90_hd<64>(launch, out, lse, tm_q, tm_k, tm_v, n, n_heads, n_kv_heads, mask);
  else
    fwd::run_forward_sm90_hd<128>(launch, out, lse, tm_q, tm_k, tm_v, n, n_heads, n_kv_heads, mask);
  return true;
}

}  // namespace ll::cuda::tc::sm90
