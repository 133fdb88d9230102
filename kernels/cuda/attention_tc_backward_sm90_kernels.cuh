#pragma once
// Hopper (sm_90a) flash attention backward kernels and their launch sequence (after the
// mma.sync rowdot kernel, D = rowsum(dO * O)): the deterministic dK/dV and dQ pair, or, with
// atomic dQ, one dK/dV/dQ kernel adding each tile's dQ to an [N, H, hd] fp32 accumulator (dQ
// may then differ between runs in its last bits). No S2Roll (attention_backward_tc gives it to
// the mma.sync kernels). Internal: included by attention_tc_backward.cu (nvcc; bodies compiled
// for sm_90a only) and by the SIMT emulator's host build.
// Design (warpgroups, transposed dK/dV problem, operands): docs/subsystems/attention-kernels.md.
#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kernels/attention_pattern.h"
#include "kernels/cuda/attention_ranges.h"
#include "kernels/cuda/attention_tc_backward_kernels.cuh"  // the rowdot kernel
#include "kernels/cuda/attention_tc_common.cuh"
#include "kernels/cuda/attention_tc_sm90_common.cuh"
#include "kernels/cuda/dynamic_smem.cuh"
#include "kernels/cuda/tc_ptx.cuh"
#include "kernels/cuda/tc_ptx_sm90.cuh"

namespace ll::cuda::tc::sm90 {

namespace bwd {

constexpr int kThreads = 256;  // 2 warpgroups
constexpr int kWarps = kBlockWarps;
static_assert(kThreads == 32 * kWarps, "2 warpgroups");
constexpr int kKeys = 128;  // dK/dV: keys per block
constexpr int kQTile = 64;  // dK/dV: queries per tile
// Atomic-dQ dK/dV kernel: the tile's dS [64 queries, 128 keys] as two K-major panels.
constexpr int kDsPanelBytes = kQTile * kPanelRowBytes;
constexpr int kDsBytes = 2 * kDsPanelBytes;
constexpr int kQRows = 128;  // dQ: queries per block
constexpr int kKTile = 64;   // dQ: keys per tile
constexpr float kLog2e = 1.4426950408889634f;

// Shared memory of a kernel whose block side has kOwn rows (two tiles: K, V or Q, dO) and
// whose other side comes in kOther-row tiles (two stages of two tiles), + kExtraBytes (a
// multiple of 1024) + 3 mbarriers.
template <int HD, int kOwn, int kOther, int kExtraBytes = 0>
struct Sm90BwdShape {
  static_assert(HD == 64 || HD == 128, "head dim 64 or 128");
  static constexpr int kPanels = HD / 64;
  static constexpr int kOwnPanelBytes = kOwn * kPanelRowBytes;
  static constexpr int kOwnBytes = kPanels * kOwnPanelBytes;  // one own tile
  static constexpr int kOtherPanelBytes = kOther * kPanelRowBytes;
  static constexpr int kOtherBytes = kPanels * kOtherPanelBytes;  // one tile of a stage
  static constexpr int kExtraOffset = 2 * kOwnBytes + 4 * kOtherBytes;
  static_assert(kExtraBytes % 1024 == 0, "panels stay 1024-byte aligned");
  static constexpr int kBarrierOffset = kExtraOffset + kExtraBytes;
  static constexpr int kSmemBytes = kBarrierOffset + 3 * 8 + 1024;  // + alignment slack
  static constexpr int kKSteps = HD / 16;
};

// wgmma descriptors: k16 step ks of the warpgroup's 64 rows (from `row0`) of a K-major panel
// tile with panels `panel_bytes` apart; the 16 rows from `row` of panel p of an N-major B.
__device__ __forceinline__ uint64_t kmajor_desc(uint32_t tile, int panel_bytes, int row0, int ks) {
  return smem_desc_sw128(
      tile + uint32_t((ks / 4) * panel_bytes + row0 * kPanelRowBytes) + uint32_t(ks % 4) * 32u, 16,
      1024);
}
__device__ __forceinline__ uint64_t nmajor_desc(uint32_t tile, int panel_bytes, int p, int row) {
  return smem_desc_sw128(tile + uint32_t(p * panel_bytes + row * kPanelRowBytes), 1024, 1024);
}

template <int HD, bool kAtomicDq>
using DkvShape = Sm90BwdShape<HD, kKeys, kQTile, kAtomicDq ? kDsBytes : 0>;

// ---------------------------------------------------------------------------------------
// dK, dV (and with kAtomicDq, dQ). Grid (ceil(N / 128), Hkv), kThreads threads,
// DkvShape<HD, kAtomicDq>::kSmemBytes:
//   K [128, HD] | V [128, HD] | Q0 [64, HD] | dO0 | Q1 | dO1 | (kAtomicDq: dS [64, 128]) |
//   mbarriers (K/V, stage 0, 1)
// Tensor maps: tm_q, tm_do box rows 64; tm_k, tm_v box rows 128.
// kAtomicDq: per query tile, dQ [64, HD] += dS K over the block's 128 keys, added to dq_accum
// ([N, H, HD] fp32, zeroed before) with fp32 atomics: the order of the additions (so the
// bytes of dQ) may change from run to run. HD 128: warpgroup w computes dQ's columns
// [64 w, 64 w + 64) over all 128 keys; HD 64: every column over its own 64 keys.
template <int HD, bool kAtomicDq>
__global__ void __launch_bounds__(kThreads, 1) attention_backward_sm90_dkv_kernel(
    bf16* __restrict__ dk, bf16* __restrict__ dv, float* __restrict__ dq_accum,
    const __grid_constant__ CUtensorMap tm_q, const __grid_constant__ CUtensorMap tm_do,
    const __grid_constant__ CUtensorMap tm_k, const __grid_constant__ CUtensorMap tm_v,
    const float* __restrict__ lse, const float* __restrict__ dvec, int n, int n_heads,
    int n_kv_heads, AttentionPattern mask, float scale, float scale_log2) {
#if LL_SM90A_DEVICE_CODE
  using S = DkvShape<HD, kAtomicDq>;
  __shared__ int s_range[kWarps][2];  // per warp: first and last visit of its rows
  // lse * log2 e and D of the staged query tiles (0 past the union).
  __shared__ __align__(16) float s_lse[2][kQTile];
  __shared__ __align__(16) float s_d[2][kQTile];

  const int tid = int(threadIdx.x), lane = tid & 31, warp = tid >> 5, wg = warp >> 2;
  const int g = lane >> 2, q4 = lane & 3;
  const int hk = int(blockIdx.y);
  const int group = n_heads / n_kv_heads;
  const int k0 = int(blockIdx.x) * kKeys;  // first key tiles see the most queries: start them first
  const int warp_row0 = warp * 16;         // block row (key) of the warp's first row
  const int64_t kv_stride = int64_t(n_kv_heads) * HD;

  unsigned char* smem;
  const uint32_t s_k = aligned_smem(smem);
  const uint32_t s_v = s_k + S::kOwnBytes;
  const uint32_t s_qbuf = s_v + S::kOwnBytes;  // stage b: Q at s_qbuf + 2b tiles, dO after
  const uint32_t bar_kv = s_k + S::kBarrierOffset, bar_q = bar_kv + 8;  // stage b: bar_q + 8b
  const uint32_t s_ds = s_k + S::kExtraOffset;  // kAtomicDq: dS [64 queries, 128 keys]
  unsigned char* const ds_tile = smem + S::kExtraOffset;

  init_mbarriers(tid, bar_kv, 3);
  __syncthreads();
  if (tid == 0) {
    mbar_arrive_expect_tx(bar_kv, 2u * S::kOwnBytes);
#pragma unroll
    for (int p = 0; p < S::kPanels; ++p) {
      tma_load_3d(s_k + p * S::kOwnPanelBytes, &tm_k, 64 * p, hk, k0, bar_kv);
      tma_load_3d(s_v + p * S::kOwnPanelBytes, &tm_v, 64 * p, hk, k0, bar_kv);
    }
  }
  float dk_acc[S::kPanels][32], dv_acc[S::kPanels][32];
#pragma unroll
  for (int p = 0; p < S::kPanels; ++p)
#pragma unroll
    for (int i = 0; i < 32; ++i) dk_acc[p][i] = dv_acc[p][i] = 0.0f;
  mbar_wait(bar_kv, 0);

  int it = 0;  // query tiles so far, over all heads: stage it & 1, its phase (it >> 1) & 1
#pragma unroll 1
  for (int gi = 0; gi < group; ++gi) {
    const int h = hk * group + gi;
    // Query visit ranges (= positions: no S2Roll here) of this thread's keys; past N: empty.
    int key_first[2], key_last[2];
    const WarpRanges wr = thread_row_ranges([&](int j) { return attn_query_range(mask, h, j); },
                                            k0 + warp_row0 + g, n, key_first, key_last);
    publish_ranges(s_range, warp, lane, wr);
    __syncthreads();  // also: the previous head's last tile is no longer read
    int u_lo, u_hi, wg_lo, wg_hi;
    block_ranges(s_range, wg, u_lo, u_hi, wg_lo, wg_hi);
    const int n_tiles = (u_hi - u_lo) / kQTile + 1;  // key k0 < N is valid: non-empty union
    const float* lse_head = lse + int64_t(h) * n;
    const float* d_head = dvec + int64_t(h) * n;

    // Q, dO tile of query visits [u0, u0 + 64) -> stage (thread 0's copies), its lse and D
    // (threads 0..63; visits past u_hi: 0).
    auto load_q = [&](int stage, int u0) {
      if (tid == 0) {
        const uint32_t bar = bar_q + 8u * uint32_t(stage);
        const uint32_t s_q = s_qbuf + uint32_t(stage) * 2u * S::kOtherBytes;
        mbar_arrive_expect_tx(bar, 2u * S::kOtherBytes);
#pragma unroll
        for (int p = 0; p < S::kPanels; ++p) {
          tma_load_3d(s_q + p * S::kOtherPanelBytes, &tm_q, 64 * p, h, u0, bar);
          tma_load_3d(s_q + S::kOtherBytes + p * S::kOtherPanelBytes, &tm_do, 64 * p, h, u0, bar);
        }
      }
      if (tid < kQTile) {
        const int u = u0 + tid;
        s_lse[stage][tid] = u <= u_hi ? lse_head[u] * kLog2e : 0.0f;
        s_d[stage][tid] = u <= u_hi ? d_head[u] : 0.0f;
      }
    };
    load_q(it & 1, u_lo);
    __syncthreads();  // the first tile's lse and D

#pragma unroll 1
    for (int t = 0; t < n_tiles; ++t, ++it) {
      const int u0 = u_lo + t * kQTile;
      const int stage = it & 1;
      if (t + 1 < n_tiles) load_q(stage ^ 1, u0 + kQTile);
      mbar_wait(bar_q + 8u * uint32_t(stage), uint32_t(it >> 1) & 1u);

      const bool skip = u0 > wg_hi || u0 + (kQTile - 1) < wg_lo;  // warpgroup-uniform
      if (!skip) {
        const bool full = wr.f_max <= u0 && u0 + (kQTile - 1) <= wr.l_min;  // warp-uniform
        const uint32_t s_q = s_qbuf + uint32_t(stage) * 2u * S::kOtherBytes;
        const uint32_t s_o = s_q + S::kOtherBytes;

        // S^T = K Q^T (this warpgroup's 64 keys x 64 queries).
        float st[32];
        wgmma_fence();
#pragma unroll
        for (int ks = 0; ks < S::kKSteps; ++ks)
          wgmma_m64n64k16_ss(st, kmajor_desc(s_k, S::kOwnPanelBytes, 64 * wg, ks),
                             kmajor_desc(s_q, S::kOtherPanelBytes, 0, ks), ks > 0 ? 1 : 0);
        wgmma_commit();
        wgmma_wait<0>();
#pragma unroll
        for (int i = 0; i < 32; ++i) fence_operand(st[i]);

        // P^T as bf16 pairs: pb[j][hf] holds queries 8 j + 2 q4, + 1 (visits u0 + ...) of key
        // row g + 8 hf.
        uint32_t pb[8][2];
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          const int c0 = 8 * j + 2 * q4;
          const float2 l2 = *reinterpret_cast<const float2*>(&s_lse[stage][c0]);
#pragma unroll
          for (int hf = 0; hf < 2; ++hf) {
            float p[2];
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              const int u = u0 + c0 + e;
              const bool vis = full || (key_first[hf] <= u && u <= key_last[hf]);
              p[e] =
                  vis ? exp2f(fmaf(st[4 * j + 2 * hf + e], scale_log2, e ? -l2.y : -l2.x)) : 0.0f;
            }
            pb[j][hf] = pack_bf16(p[0], p[1]);
          }
        }

        // dV += P^T dO and dP^T = V dO^T in one batch.
        float dpt[32];
        wgmma_fence();  // orders the writes of pb (and dv_acc's last use) before the wgmma
#pragma unroll
        for (int kc = 0; kc < kQTile / 16; ++kc) {
          const uint32_t a[4] = {pb[2 * kc][0], pb[2 * kc][1], pb[2 * kc + 1][0],
                                 pb[2 * kc + 1][1]};
#pragma unroll
          for (int p = 0; p < S::kPanels; ++p)
            wgmma_m64n64k16_rs_nmajor(dv_acc[p], a,
                                      nmajor_desc(s_o, S::kOtherPanelBytes, p, 16 * kc), 1);
        }
#pragma unroll
        for (int ks = 0; ks < S::kKSteps; ++ks)
          wgmma_m64n64k16_ss(dpt, kmajor_desc(s_v, S::kOwnPanelBytes, 64 * wg, ks),
                             kmajor_desc(s_o, S::kOtherPanelBytes, 0, ks), ks > 0 ? 1 : 0);
        wgmma_commit();
        wgmma_wait<0>();
#pragma unroll
        for (int i = 0; i < 32; ++i) fence_operand(dpt[i]);

          // dS^T = P^T (dP^T - D), in place of P^T (invisible pairs: P = 0, so dS = 0).
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          const float2 dd = *reinterpret_cast<const float2*>(&s_d[stage][8 * j + 2 * q4]);
#pragma unroll
          for (int hf = 0; hf < 2; ++hf) {
            const float p0 = __uint_as_float(pb[j][hf] << 16);
            const float p1 = __uint_as_float(pb[j][hf] & 0xffff0000u);
            pb[j][hf] =
                pack_bf16(p0 * (dpt[4 * j + 2 * hf] - dd.x), p1 * (dpt[4 * j + 2 * hf + 1] - dd.y));
          }
        }

        // kAtomicDq: dS (queries as rows) into the warpgroup's panel of the dS tile; element
        // (query c, key row r) of pb[j][hf]: c = 8 j + 2 q4 + e, r = warp_row0 + g + 8 hf.
        if constexpr (kAtomicDq) {
#pragma unroll
          for (int j = 0; j < 8; ++j)
#pragma unroll
            for (int hf = 0; hf < 2; ++hf) {
              const int r = warp_row0 + g + 8 * hf;
              const int c = 8 * j + 2 * q4;
              unsigned char* const at = ds_tile + (r & 7) * 2;
              *reinterpret_cast<uint16_t*>(at + panel_offset<kQTile>(c, r >> 3)) =
                  uint16_t(pb[j][hf] & 0xffffu);
              *reinterpret_cast<uint16_t*>(at + panel_offset<kQTile>(c + 1, r >> 3)) =
                  uint16_t(pb[j][hf] >> 16);
            }
        }

        // dK += dS^T Q.
        wgmma_fence();
#pragma unroll
        for (int kc = 0; kc < kQTile / 16; ++kc) {
          const uint32_t a[4] = {pb[2 * kc][0], pb[2 * kc][1], pb[2 * kc + 1][0],
                                 pb[2 * kc + 1][1]};
#pragma unroll
          for (int p = 0; p < S::kPanels; ++p)
            wgmma_m64n64k16_rs_nmajor(dk_acc[p], a,
                                      nmajor_desc(s_q, S::kOtherPanelBytes, p, 16 * kc), 1);
        }
        wgmma_commit();
      } else if constexpr (kAtomicDq && HD == 128) {
        // The other warpgroup's dQ columns read this warpgroup's keys: dS = 0 there.
        uint4* const panel = reinterpret_cast<uint4*>(ds_tile + wg * kDsPanelBytes);
#pragma unroll
        for (int i = 0; i < kDsPanelBytes / 16 / 128; ++i)
          panel[(tid & 127) + 128 * i] = make_uint4(0u, 0u, 0u, 0u);
      }

      if constexpr (kAtomicDq) {
        // dQ [64, HD] += dS K (this warpgroup's share), then fp32 atomics into dq_accum.
        fence_proxy_async_smem();  // the dS stores, before the wgmma reads them
        __syncthreads();           // both warpgroups' dS panels are written
        constexpr int kDqSteps = HD == 128 ? kKeys / 16 : kKeys / 32;  // k16 steps over keys
        const int ks0 = HD == 128 ? 0 : (kKeys / 32) * wg;
        const int pc = HD == 128 ? wg : 0;  // dQ column panel
        float dq_part[32];
        if (HD == 128 || !skip) {
          wgmma_fence();
#pragma unroll
          for (int i = 0; i < kDqSteps; ++i)
            wgmma_m64n64k16_ss_nmajor(dq_part, kmajor_desc(s_ds, kDsPanelBytes, 0, ks0 + i),
                                      nmajor_desc(s_k, S::kOwnPanelBytes, pc, 16 * (ks0 + i)),
                                      i > 0 ? 1 : 0);
          wgmma_commit();
        }
        wgmma_wait<0>();
        if (HD == 128 || !skip) {
#pragma unroll
          for (int i = 0; i < 32; ++i) fence_operand(dq_part[i]);
          const int r0 = (warp & 3) * 16 + g;  // the warp's rows of the wgmma tile
#pragma unroll
          for (int hf = 0; hf < 2; ++hf) {
            const int u = u0 + r0 + 8 * hf;
            if (u > u_hi) continue;  // dS = 0 (and rows past N)
            float* const row = dq_accum + (int64_t(u) * n_heads + h) * HD + 64 * pc + 2 * q4;
#pragma unroll
            for (int j = 0; j < 8; ++j)
              atomicAdd(reinterpret_cast<float2*>(row + 8 * j),
                        make_float2(dq_part[4 * j + 2 * hf], dq_part[4 * j + 2 * hf + 1]));
          }
        }
      } else if (!skip) {
        wgmma_wait<0>();
      }
#pragma unroll
      for (int p = 0; p < S::kPanels; ++p)
#pragma unroll
        for (int i = 0; i < 32; ++i) {
          fence_operand(dk_acc[p][i]);
          fence_operand(dv_acc[p][i]);
        }
      __syncthreads();  // the stage (and its lse / D, the dS tile) is refilled next iteration
    }
  }

  // Each warp's rows of K and V were read only by its own warpgroup's wgmma, all retired.
  const float k_mul[2] = {scale, scale}, v_mul[2] = {1.0f, 1.0f};
  store_acc_rows<HD, kKeys>(smem, dk_acc, k_mul, lane, warp_row0, k0, n, dk + int64_t(hk) * HD,
                            kv_stride);
  store_acc_rows<HD, kKeys>(smem + S::kOwnBytes, dv_acc, v_mul, lane, warp_row0, k0, n,
                            dv + int64_t(hk) * HD, kv_stride);
#elif defined(__CUDA_ARCH__)
  __trap();  // code without sm_90a is never picked (attention_device_support.h); loud if it is
#endif  // LL_SM90A_DEVICE_CODE
}

// ---------------------------------------------------------------------------------------
// dQ. Grid (ceil(N / 128), H), kThreads threads, Sm90BwdShape<HD, 128, 64>::kSmemBytes:
//   Q [128, HD] | dO [128, HD] | K0 [64, HD] | V0 | K1 | V1 | mbarriers (Q/dO, stage 0, 1)
// Tensor maps: tm_q, tm_do box rows 128; tm_k, tm_v box rows 64.
template <int HD>
__global__ void __launch_bounds__(kThreads, 1)
    attention_backward_sm90_dq_kernel(bf16* __restrict__ dq,
                                      const __grid_constant__ CUtensorMap tm_q,
                                      const __grid_constant__ CUtensorMap tm_do,
                                      const __grid_constant__ CUtensorMap tm_k,
                                      const __grid_constant__ CUtensorMap tm_v,
                                      const float* __restrict__ lse, const float* __restrict__ dvec,
                                      int n, int n_heads, int n_kv_heads, AttentionPattern mask,
                                      float scale, float scale_log2) {
#if LL_SM90A_DEVICE_CODE
  using S = Sm90BwdShape<HD, kQRows, kKTile>;
  __shared__ int s_range[kWarps][2];  // per warp: first and last visit of its rows

  const int tid = int(threadIdx.x), lane = tid & 31, warp = tid >> 5, wg = warp >> 2;
  const int g = lane >> 2, q4 = lane & 3;
  const int h = int(blockIdx.y);
  const int hk = h / (n_heads / n_kv_heads);
  const int q0 = (int(gridDim.x) - 1 - int(blockIdx.x)) * kQRows;  // late rows see the most keys
  const int warp_row0 = warp * 16;
  const int64_t q_stride = int64_t(n_heads) * HD;

  unsigned char* smem;
  const uint32_t s_q = aligned_smem(smem);
  const uint32_t s_o = s_q + S::kOwnBytes;
  const uint32_t s_kv = s_o + S::kOwnBytes;  // stage b: K at s_kv + 2b tiles, V after
  const uint32_t bar_q = s_q + S::kBarrierOffset, bar_kv = bar_q + 8;  // stage b: bar_kv + 8b

  // Key visit ranges, lse * log2 e and D of this thread's rows; rows past N: empty.
  int row_first[2], row_last[2];
  const WarpRanges wr = thread_row_ranges([&](int i) { return attn_key_range(mask, h, i); },
                                          q0 + warp_row0 + g, n, row_first, row_last);
  publish_ranges(s_range, warp, lane, wr);
  float row_l2[2], row_d[2];
#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    const int i = q0 + warp_row0 + g + 8 * hf;
    row_l2[hf] = i < n ? lse[int64_t(h) * n + i] * kLog2e : 0.0f;
    row_d[hf] = i < n ? dvec[int64_t(h) * n + i] : 0.0f;
  }
  init_mbarriers(tid, bar_q, 3);
  __syncthreads();
  int v_lo, v_hi, wg_lo, wg_hi;
  block_ranges(s_range, wg, v_lo, v_hi, wg_lo, wg_hi);
  const int n_tiles = (v_hi - v_lo) / kKTile + 1;  // row q0 < N is valid: non-empty union

  auto load_kv = [&](int stage, int v0) {  // thread 0
    const uint32_t bar = bar_kv + 8u * uint32_t(stage);
    const uint32_t s_k = s_kv + uint32_t(stage) * 2u * S::kOtherBytes;
    mbar_arrive_expect_tx(bar, 2u * S::kOtherBytes);
#pragma unroll
    for (int p = 0; p < S::kPanels; ++p) {
      tma_load_3d(s_k + p * S::kOtherPanelBytes, &tm_k, 64 * p, hk, v0, bar);
      tma_load_3d(s_k + S::kOtherBytes + p * S::kOtherPanelBytes, &tm_v, 64 * p, hk, v0, bar);
    }
  };
  if (tid == 0) {
    mbar_arrive_expect_tx(bar_q, 2u * S::kOwnBytes);
#pragma unroll
    for (int p = 0; p < S::kPanels; ++p) {
      tma_load_3d(s_q + p * S::kOwnPanelBytes, &tm_q, 64 * p, h, q0, bar_q);
      tma_load_3d(s_o + p * S::kOwnPanelBytes, &tm_do, 64 * p, h, q0, bar_q);
    }
    load_kv(0, v_lo);
  }
  float dq_acc[S::kPanels][32];
#pragma unroll
  for (int p = 0; p < S::kPanels; ++p)
#pragma unroll
    for (int i = 0; i < 32; ++i) dq_acc[p][i] = 0.0f;
  mbar_wait(bar_q, 0);

#pragma unroll 1
  for (int t = 0; t < n_tiles; ++t) {
    const int v0 = v_lo + t * kKTile;
    if (tid == 0 && t + 1 < n_tiles) load_kv((t + 1) & 1, v0 + kKTile);
    mbar_wait(bar_kv + 8u * uint32_t(t & 1), uint32_t(t >> 1) & 1u);

    const bool skip = v0 > wg_hi || v0 + (kKTile - 1) < wg_lo;  // warpgroup-uniform
    if (!skip) {
      const bool full = wr.f_max <= v0 && v0 + (kKTile - 1) <= wr.l_min;  // warp-uniform
      const uint32_t s_k = s_kv + uint32_t(t & 1) * 2u * S::kOtherBytes;
      const uint32_t s_v = s_k + S::kOtherBytes;

      // S = Q K^T and dP = dO V^T (this warpgroup's 64 rows x 64 keys).
      float s[32], dp[32];
      wgmma_fence();
#pragma unroll
      for (int ks = 0; ks < S::kKSteps; ++ks)
        wgmma_m64n64k16_ss(s, kmajor_desc(s_q, S::kOwnPanelBytes, 64 * wg, ks),
                           kmajor_desc(s_k, S::kOtherPanelBytes, 0, ks), ks > 0 ? 1 : 0);
#pragma unroll
      for (int ks = 0; ks < S::kKSteps; ++ks)
        wgmma_m64n64k16_ss(dp, kmajor_desc(s_o, S::kOwnPanelBytes, 64 * wg, ks),
                           kmajor_desc(s_v, S::kOtherPanelBytes, 0, ks), ks > 0 ? 1 : 0);
      wgmma_commit();
      wgmma_wait<0>();
#pragma unroll
      for (int i = 0; i < 32; ++i) {
        fence_operand(s[i]);
        fence_operand(dp[i]);
      }

      // dS = P (dP - D) as bf16 A fragments (k16 step kc: n8 tiles 2kc, 2kc + 1); key column
      // c is visit v0 + c.
      uint32_t ds[kKTile / 16][4];
#pragma unroll
      for (int j = 0; j < 8; ++j) {
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) {
          float x[2];
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int i = 4 * j + 2 * hf + e;
            const int vis_idx = v0 + 8 * j + 2 * q4 + e;
            const bool vis = full || (row_first[hf] <= vis_idx && vis_idx <= row_last[hf]);
            const float p = vis ? exp2f(fmaf(s[i], scale_log2, -row_l2[hf])) : 0.0f;
            x[e] = p * (dp[i] - row_d[hf]);
          }
          ds[j / 2][2 * (j % 2) + hf] = pack_bf16(x[0], x[1]);
        }
      }

      // dQ += dS K (K N-major).
      wgmma_fence();
#pragma unroll
      for (int kc = 0; kc < kKTile / 16; ++kc)
#pragma unroll
        for (int p = 0; p < S::kPanels; ++p)
          wgmma_m64n64k16_rs_nmajor(dq_acc[p], ds[kc],
                                    nmajor_desc(s_k, S::kOtherPanelBytes, p, 16 * kc), 1);
      wgmma_commit();
      wgmma_wait<0>();
#pragma unroll
      for (int p = 0; p < S::kPanels; ++p)
#pragma unroll
        for (int i = 0; i < 32; ++i) fence_operand(dq_acc[p][i]);
    }
    __syncthreads();  // stage t & 1 is refilled by the next iteration's copy
  }

  // Each warp's rows of Q were read only by its own warpgroup's wgmma, all retired.
  const float mul[2] = {scale, scale};
  store_acc_rows<HD, kQRows>(smem, dq_acc, mul, lane, warp_row0, q0, n, dq + int64_t(h) * HD,
                             q_stride);
#elif defined(__CUDA_ARCH__)
  __trap();  // code without sm_90a is never picked (attention_device_support.h); loud if it is
#endif  // LL_SM90A_DEVICE_CODE
}

// ---------------------------------------------------------------------------------------
// The atomic dQ's accumulator: zeroed before the dK/dV/dQ kernel, converted after it.
constexpr int kEwThreads = 256;

// acc [count4 * 4] fp32 <- 0.
__global__ void __launch_bounds__(kEwThreads)
    attention_dq_accum_zero_kernel(float4* __restrict__ acc, int64_t count4) {
  const int64_t stride = int64_t(gridDim.x) * kEwThreads;
  for (int64_t i = int64_t(blockIdx.x) * kEwThreads + threadIdx.x; i < count4; i += stride)
    acc[i] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
}

// dq [count4 * 4] bf16 <- acc * scale (round to nearest even).
__global__ void __launch_bounds__(kEwThreads)
    attention_dq_from_accum_kernel(bf16* __restrict__ dq, const float4* __restrict__ acc,
                                   int64_t count4, float scale) {
  const int64_t stride = int64_t(gridDim.x) * kEwThreads;
  for (int64_t i = int64_t(blockIdx.x) * kEwThreads + threadIdx.x; i < count4; i += stride) {
    const float4 a = acc[i];
    reinterpret_cast<uint2*>(dq)[i] =
        make_uint2(pack_bf16(a.x * scale, a.y * scale), pack_bf16(a.z * scale, a.w * scale));
  }
}

inline unsigned ew_blocks(int64_t count4) {
  return unsigned(std::min<int64_t>((count4 + kEwThreads - 1) / kEwThreads, int64_t(1) << 16));
}

template <int HD, typename Launcher, typename Encode>
bool run_backward_sm90_hd(const Launcher& launch, Encode encode, bf16* dq, bf16* dk, bf16* dv,
                          const bf16* dout, const bf16* q, const bf16* k, const bf16* v,
                          const bf16* out, const float* lse, float* dvec, float* dq_accum, int n,
                          int n_heads, int n_kv_heads, const AttentionPattern& mask) {
  CUtensorMap q64, do64, k128, v128, q128, do128, k64, v64;
  if (!make_head_map(encode, q64, q, n, n_heads, HD, kQTile) ||
      !make_head_map(encode, do64, dout, n, n_heads, HD, kQTile) ||
      !make_head_map(encode, k128, k, n, n_kv_heads, HD, kKeys) ||
      !make_head_map(encode, v128, v, n, n_kv_heads, HD, kKeys) ||
      !make_head_map(encode, q128, q, n, n_heads, HD, kQRows) ||
      !make_head_map(encode, do128, dout, n, n_heads, HD, kQRows) ||
      !make_head_map(encode, k64, k, n, n_kv_heads, HD, kKTile) ||
      !make_head_map(encode, v64, v, n, n_kv_heads, HD, kKTile))
    return false;
  const float scale = float(1.0 / std::sqrt(double(HD)));
  const float scale_log2 = float(1.4426950408889634 / std::sqrt(double(HD)));

  constexpr int kRowdotWarps = tc::bwd::kWarps;
  const int64_t rows = int64_t(n) * n_heads;
  const int64_t row_blocks =
      std::min<int64_t>((rows + kRowdotWarps - 1) / kRowdotWarps, int64_t(1) << 20);
  launch("attention_tc_rowdot_kernel", tc::bwd::attention_tc_rowdot_kernel<HD>,
         dim3(unsigned(row_blocks)), dim3(tc::bwd::kThreads), size_t(0), dvec, dout, out,
         int64_t(n), n_heads);

  const dim3 dkv_grid(unsigned((int64_t(n) + kKeys - 1) / kKeys), unsigned(n_kv_heads));
  if (dq_accum != nullptr) {
    const int64_t count4 = int64_t(n) * n_heads * HD / 4;
    launch("attention_dq_accum_zero_kernel", attention_dq_accum_zero_kernel,
           dim3(ew_blocks(count4)), dim3(kEwThreads), size_t(0),
           reinterpret_cast<float4*>(dq_accum), count4);
    launch("attention_backward_sm90_dkv_kernel<atomic dQ>",
           attention_backward_sm90_dkv_kernel<HD, true>, dkv_grid, dim3(kThreads),
           size_t(DkvShape<HD, true>::kSmemBytes), dk, dv, dq_accum, q64, do64, k128, v128, lse,
           dvec, n, n_heads, n_kv_heads, mask, scale, scale_log2);
    launch("attention_dq_from_accum_kernel", attention_dq_from_accum_kernel,
           dim3(ew_blocks(count4)), dim3(kEwThreads), size_t(0), dq,
           reinterpret_cast<const float4*>(dq_accum), count4, scale);
    return true;
  }
  launch("attention_backward_sm90_dkv_kernel", attention_backward_sm90_dkv_kernel<HD, false>,
         dkv_grid, dim3(kThreads), size_t(DkvShape<HD, false>::kSmemBytes), dk, dv,
         static_cast<float*>(nullptr), q64, do64, k128, v128, lse, dvec, n, n_heads, n_kv_heads,
         mask, scale, scale_log2);
  launch("attention_backward_sm90_dq_kernel", attention_backward_sm90_dq_kernel<HD>,
         dim3(unsigned((int64_t(n) + kQRows - 1) / kQRows), unsigned(n_heads)), dim3(kThreads),
         size_t(Sm90BwdShape<HD, kQRows, kKTile>::kSmemBytes), dq, q128, do128, k64, v64, lse, dvec,
         n, n_heads, n_kv_heads, mask, scale, scale_log2);
  return true;
}

}  // namespace bwd

// The launch sequence of the Hopper backward after the argument checks (N > 0, no S2Roll
// mask, 16-byte aligned tensors; dvec: the [H, N] fp32 workspace). dq_accum null: the
// deterministic kernels (dK/dV, then dQ); else the atomic dQ ([N, H, hd] fp32, 16-byte
// aligned): zero it, dK/dV/dQ in one kernel, convert. Returns false (and launches nothing) when
// `encode` refuses a tensor map.
template <typename Launcher, typename Encode>
bool run_backward_sm90(const Launcher& launch, Encode encode, bf16* dq, bf16* dk, bf16* dv,
                       const bf16* dout, const bf16* q, const bf16* k, const bf16* v,
                       const bf16* out, const float* lse, float* dvec, float* dq_accum, int n,
                       int n_heads, int n_kv_heads, int head_dim, const AttentionPattern& mask) {
  if (head_dim == 64)
    return bwd::run_backward_sm90_hd<64>(launch, encode, dq, dk, dv, dout, q, k, v, out, lse, dvec,
                                         dq_accum, n, n_heads, n_kv_heads, mask);
  return bwd::run_backward_sm90_hd<128>(launch, encode, dq, dk, dv, dout, q, k, v, out, lse, dvec,
                                        dq_accum, n, n_heads, n_kv_heads, mask);
}

}  // namespace ll::cuda::tc::sm90
