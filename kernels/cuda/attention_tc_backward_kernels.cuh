#pragma once
// Tensor-core (mma.sync, sm_80+) flash attention backward, deterministic (no atomics: every
// output element is owned by one block and summed in a fixed order): the rowdot, dK/dV and dQ
// kernels and their host launch sequence; contract in attention_tc.cuh. Internal: included by
// attention_tc_backward.cu (nvcc) and by the SIMT emulator's host build (tests/cuda_emu), which
// run the same kernels and sequence.
// Design (tiles, fragments, masking, shared memory): docs/subsystems/attention-kernels.md;
// registers and spills: bench/RESULTS.md.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>

#include "kernels/attention_pattern.h"
#include "kernels/cuda/attention_ranges.h"
#include "kernels/cuda/attention_tc_common.cuh"

namespace ll::cuda::tc {

using bf16 = __nv_bfloat16;

namespace bwd {

constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
constexpr int kB = 64;                           // rows per tile (queries and keys)
constexpr int64_t kMaxTokens = INT32_MAX - 256;  // visit indices and u0 + kB stay in int
constexpr float kLog2e = 1.4426950408889634f;

template <int HD>
struct BwdShape {
  static_assert(HD == 64 || HD == 128, "head dim 64 or 128");
  static constexpr int kChunks = HD / 8;  // 16-byte chunks per row
  static constexpr int kRowBytes = HD * 2;
  static constexpr int kRowsPerPass = kThreads / kChunks;
  static constexpr int kKSteps = HD / 16;  // k16 steps over the head dim
  static constexpr int kSTiles = kB / 8;   // n8 tiles of a 16 x 64 score tile
  static constexpr int kHdTiles = HD / 8;  // n8 tiles of a 16 x HD accumulator
  static constexpr int kTileBytes = kB * kRowBytes;
  static constexpr int kSmemBytes = 6 * kTileBytes;  // both kernels: 2 fixed + 2 x 2 buffered
  static_assert(kThreads % kChunks == 0 && kB % kRowsPerPass == 0, "copy passes tile the rows");
};

// Per-lane ldmatrix offsets (bytes). Chunk pair j = step & 3 of a 16-byte-chunk step: chunk
// (2j + half) ^ (row & 7) is ((j ^ ((row & 7) >> 1)) << 1) | (half ^ (row & 1)), so the
// offset of pair j is base ^ (j << 5) with one per-lane base (row * kRowBytes is a multiple of
// 128 and leaves bits 5-6 to the XOR); step >> 2 adds 128 bytes (chunk bit 3 passes the XOR
// unchanged). row & 7 == lane & 7 for every 16-row block.
//   a: A operand (16 rows from row0, row-major): matrices rows 0-7 | 8-15 | 0-7 | 8-15 x
//      k half 0 | 0 | 1 | 1.
//   b: B operand from a [n rows, k] tile (non-transposed): rows 0-7 | 0-7 | 8-15 | 8-15 x
//      k half 0 | 1 | 0 | 1 -> b0, b1 of n8 tile 2np, then of tile 2np + 1.
//   t: B operand from a [k rows, n] tile (ldmatrix.trans): k rows 0-7 | 8-15 | 0-7 | 8-15 x
//      n half 0 | 0 | 1 | 1.
template <int kRowBytes>
__device__ __forceinline__ uint32_t lane_base(int lane, int row, int half) {
  static_assert(kRowBytes % 128 == 0, "rows must keep bits 5-6 free");
  return uint32_t(row * kRowBytes + (((lane & 7) >> 1) << 5) + ((half ^ (lane & 1)) << 4));
}
// Offset of chunk step `step` (compile-time after unrolling) from a lane base.
__device__ __forceinline__ uint32_t step_off(uint32_t base, int step) {
  return (base ^ (uint32_t(step & 3) << 5)) + uint32_t(step >> 2) * 128u;
}

// Scales a warp's 16 x HD fp32 accumulator, rounds it to bf16 into the warp's own rows
// [row0, row0 + 16) of a swizzled shared tile and stores the rows < n with 16-byte stores to
// dst + row * stride (rows counted from the tile's first position p0).
template <int HD>
__device__ __forceinline__ void store_rows(unsigned char* tile, const float (&acc)[HD / 8][4],
                                           float mul, int lane, int row0, int p0, int n, bf16* dst,
                                           int64_t stride) {
  using S = BwdShape<HD>;
  const int g = lane >> 2, t4 = lane & 3;
#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    const int row = row0 + g + 8 * hf;
#pragma unroll
    for (int ot = 0; ot < S::kHdTiles; ++ot) {
      const uint32_t packed = pack_bf16(acc[ot][2 * hf] * mul, acc[ot][2 * hf + 1] * mul);
      *reinterpret_cast<uint32_t*>(tile + swz<S::kRowBytes>(row, ot) + 4 * t4) = packed;
    }
  }
  __syncwarp();
  constexpr int kWarpChunks = 16 * S::kChunks;
  static_assert(kWarpChunks % 32 == 0, "whole warp passes");
#pragma unroll
  for (int p = 0; p < kWarpChunks / 32; ++p) {
    const int c = lane + 32 * p;
    const int row = row0 + c / S::kChunks, ch = c % S::kChunks;
    const int i = p0 + row;
    if (i < n) {
      const uint4 val = *reinterpret_cast<const uint4*>(tile + swz<S::kRowBytes>(row, ch));
      *reinterpret_cast<uint4*>(dst + int64_t(i) * stride + ch * 8) = val;
    }
  }
}

// ---------------------------------------------------------------------------------------
// D[h, i] = sum_d dout[i, h, d] * out[i, h, d]: one warp per (token, head) row, grid-stride.
template <int HD>
__global__ void __launch_bounds__(kThreads)
    attention_tc_rowdot_kernel(float* __restrict__ dvec, const bf16* __restrict__ dout,
                               const bf16* __restrict__ out, int64_t n, int n_heads) {
  const int lane = int(threadIdx.x) & 31;
  const int64_t rows = n * n_heads;
  for (int64_t row = int64_t(blockIdx.x) * kWarps + (threadIdx.x >> 5); row < rows;
       row += int64_t(gridDim.x) * kWarps) {
    const int64_t base = row * HD;  // [N, H, HD]: (i, h) is row i * H + h
    float s = 0.0f;
#pragma unroll
    for (int d0 = 0; d0 < HD; d0 += 64) {
      const float2 a =
          __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(dout + base + d0 + 2 * lane));
      const float2 b =
          __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(out + base + d0 + 2 * lane));
      s = fmaf(a.x, b.x, s);
      s = fmaf(a.y, b.y, s);
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (lane == 0) dvec[int64_t(row % n_heads) * n + row / n_heads] = s;
  }
}

// ---------------------------------------------------------------------------------------
// dK, dV. Grid (ceil(N / 64), Hkv), kThreads threads, BwdShape::kSmemBytes dynamic smem:
//   K [64, HD] | V [64, HD] | Q0 | dO0 | Q1 | dO1
// Fragment notation (PTX mma.m16n8k16): lane = 4 g + t4; a thread holds C rows g and g + 8
// (keys here), columns 2 t4 and 2 t4 + 1 (queries) of every n8 tile.
template <int HD>
__global__ void __launch_bounds__(kThreads, 2)
    attention_backward_tc_dkv_kernel(bf16* __restrict__ dk, bf16* __restrict__ dv,
                                     const bf16* __restrict__ dout, const bf16* __restrict__ q,
                                     const bf16* __restrict__ k, const bf16* __restrict__ v,
                                     const float* __restrict__ lse, const float* __restrict__ dvec,
                                     int n, int n_heads, int n_kv_heads, AttentionPattern mask,
                                     float scale, float scale_log2) {
  using S = BwdShape<HD>;
  unsigned char* const smem = dynamic_smem();
  __shared__ int s_range[kWarps][2];
  // lse * log2 e and D of the buffered query tiles (0 past the union).
  __shared__ __align__(16) float s_lse[2][kB];
  __shared__ __align__(16) float s_d[2][kB];

  const int tid = int(threadIdx.x), lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, t4 = lane & 3;
  const int hk = int(blockIdx.y);
  const int group = n_heads / n_kv_heads;
  const int k0 = int(blockIdx.x) * kB;  // first key tiles see the most queries: start them first
  const int warp_row0 = warp * 16;
  const int64_t q_stride = int64_t(n_heads) * HD, kv_stride = int64_t(n_kv_heads) * HD;
  const uint32_t s_k = uint32_t(__cvta_generic_to_shared(smem));
  const uint32_t s_v = s_k + S::kTileBytes;
  const uint32_t s_qbuf = s_v + S::kTileBytes;  // buffer b: Q at s_qbuf + 2b tiles, dO after

  const int copy_chunk = tid % S::kChunks, copy_row = tid / S::kChunks;
  // K, V tile (positions k0 + r, zero past N). Group 0.
  load_tile_rows<kB, S::kRowsPerPass, S::kRowBytes>(
      copy_row, copy_chunk, clipped_rows(k0, n, kv_stride, int64_t(hk) * HD, copy_chunk),
      TileCopy{s_k, k}, TileCopy{s_v, v});
  cp_async_commit();

  const uint32_t a_base = lane_base<S::kRowBytes>(lane, warp_row0 + (lane & 15), lane >> 4);
  const uint32_t b_base =
      lane_base<S::kRowBytes>(lane, (lane & 7) + ((lane >> 4) << 3), (lane >> 3) & 1);
  const uint32_t t_base =
      lane_base<S::kRowBytes>(lane, (lane & 7) + (((lane >> 3) & 1) << 3), lane >> 4);

  float dk_acc[S::kHdTiles][4], dv_acc[S::kHdTiles][4];
#pragma unroll
  for (int ot = 0; ot < S::kHdTiles; ++ot)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk_acc[ot][e] = dv_acc[ot][e] = 0.0f;

#pragma unroll 1
  for (int gi = 0; gi < group; ++gi) {
    const int h = hk * group + gi;
    // Query visit ranges of this thread's two keys (rows g, g + 8); keys past N: empty.
    int key_first[2], key_last[2];
    int f_min = INT_MAX, f_max = INT_MIN, l_min = INT_MAX, l_max = INT_MIN;
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      const int j = k0 + warp_row0 + g + 8 * hf;
      if (j < n) {
        const QueryRange qr = attn_query_range(mask, h, j);
        key_first[hf] = int(qr.first);
        key_last[hf] = int(qr.last);
        f_min = min(f_min, key_first[hf]);
        f_max = max(f_max, key_first[hf]);
        l_min = min(l_min, key_last[hf]);
        l_max = max(l_max, key_last[hf]);
      } else {
        key_first[hf] = 1;
        key_last[hf] = 0;
      }
    }
    warp_ranges(f_min, f_max, l_min, l_max);
    if (lane == 0) {
      s_range[warp][0] = f_min;
      s_range[warp][1] = l_max;
    }
    __syncthreads();  // also: the previous head's last tile is no longer read
    int u_lo, u_hi;   // key k0 < N is valid: the union is non-empty
    block_visit_union(s_range, u_lo, u_hi);
    const int n_tiles = (u_hi - u_lo) / kB + 1;
    const int64_t q_shift =
        mask.mode == AttnMode::S2Roll ? attn_head_shift(mask, h) % int64_t(n) : 0;
    const bf16* q_head = q + int64_t(h) * HD + copy_chunk * 8;
    const bf16* o_head = dout + int64_t(h) * HD + copy_chunk * 8;
    const float* lse_head = lse + int64_t(h) * n;
    const float* d_head = dvec + int64_t(h) * n;

    // Q, dO, lse, D of query visits [u0, u0 + 64) -> buffer buf; visits past u_hi zero.
    auto load_q = [&](int buf, int u0) {
      const uint32_t s_q = s_qbuf + uint32_t(buf) * 2u * S::kTileBytes;
      const uint32_t s_o = s_q + S::kTileBytes;
      load_tile_rows<kB, S::kRowsPerPass, S::kRowBytes>(
          copy_row, copy_chunk, wrapped_rows(u0, u_hi, q_shift, n, q_stride), TileCopy{s_q, q_head},
          TileCopy{s_o, o_head});
      if (tid < kB) {
        const int u = u0 + tid;
        float l2 = 0.0f, d = 0.0f;
        if (u <= u_hi) {
          int64_t pos = int64_t(u) + q_shift;
          if (pos >= n) pos -= n;
          l2 = lse_head[pos] * kLog2e;
          d = d_head[pos];
        }
        s_lse[buf][tid] = l2;
        s_d[buf][tid] = d;
      }
    };

    load_q(0, u_lo);
    cp_async_commit();

#pragma unroll 1
    for (int t = 0; t < n_tiles; ++t) {
      const int u0 = u_lo + t * kB;
      if (t + 1 < n_tiles) load_q((t + 1) & 1, u0 + kB);
      cp_async_commit();   // possibly empty: one group per iteration
      cp_async_wait<1>();  // K, V and tile t have landed (this thread's part)
      __syncthreads();     // ... and everyone's, with lse / D of tile t

      const bool skip = u0 > l_max || u0 + (kB - 1) < f_min;  // warp-uniform
      if (!skip) {
        const bool full = f_max <= u0 && u0 + (kB - 1) <= l_min;
        const int buf = t & 1;
        const uint32_t s_q = s_qbuf + uint32_t(buf) * 2u * S::kTileBytes;
        const uint32_t s_o = s_q + S::kTileBytes;

        // S^T = K Q^T (keys x queries, fp32).
        float s[S::kSTiles][4];
#pragma unroll
        for (int nt = 0; nt < S::kSTiles; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) s[nt][e] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < S::kKSteps; ++kk) {
          uint32_t ka[4];
          ldsm_x4(ka, s_k + step_off(a_base, kk));
#pragma unroll
          for (int np = 0; np < S::kSTiles / 2; ++np) {
            uint32_t b[4];
            ldsm_x4(b, s_q + step_off(b_base, kk) + np * 16 * S::kRowBytes);
            mma_bf16(s[2 * np], ka, b[0], b[1]);
            mma_bf16(s[2 * np + 1], ka, b[2], b[3]);
          }
        }

        // P^T, rounded to bf16 pairs at once: pb[nt][hf] holds columns 2 t4, 2 t4 + 1 of n8
        // tile nt for key row g + 8 hf (query column c is visit u0 + c). Keeping P only as
        // bf16 (the mma operand anyway; dS below uses the same rounded P) frees S^T before
        // dP^T is formed: hd 128 stays under the register cap without spills.
        uint32_t pb[S::kSTiles][2];
#pragma unroll
        for (int nt = 0; nt < S::kSTiles; ++nt) {
          const int c0 = nt * 8 + 2 * t4;
          const float2 l2 = *reinterpret_cast<const float2*>(&s_lse[buf][c0]);
#pragma unroll
          for (int hf = 0; hf < 2; ++hf) {
            float p[2];
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              const int u = u0 + c0 + e;
              const bool vis = full || (key_first[hf] <= u && u <= key_last[hf]);
              p[e] = vis ? exp2f(fmaf(s[nt][2 * hf + e], scale_log2, -(e ? l2.y : l2.x))) : 0.0f;
            }
            pb[nt][hf] = pack_bf16(p[0], p[1]);
          }
        }

        // dV += P^T dO: the C fragments of n8 tiles 2kc, 2kc + 1 are the A fragment of k16
        // step kc (queries 16 kc ...); dO rows are the k dimension (ldmatrix.trans).
#pragma unroll
        for (int kc = 0; kc < kB / 16; ++kc) {
          const uint32_t ap[4] = {pb[2 * kc][0], pb[2 * kc][1], pb[2 * kc + 1][0],
                                  pb[2 * kc + 1][1]};
#pragma unroll
          for (int np = 0; np < S::kHdTiles / 2; ++np) {
            uint32_t b[4];
            ldsm_x4_trans(b, s_o + step_off(t_base, np) + kc * 16 * S::kRowBytes);
            mma_bf16(dv_acc[2 * np], ap, b[0], b[1]);
            mma_bf16(dv_acc[2 * np + 1], ap, b[2], b[3]);
          }
        }

        // dP^T = V dO^T.
        float dp[S::kSTiles][4];
#pragma unroll
        for (int nt = 0; nt < S::kSTiles; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) dp[nt][e] = 0.0f;
#pragma unroll
        for (int kk = 0; kk < S::kKSteps; ++kk) {
          uint32_t va[4];
          ldsm_x4(va, s_v + step_off(a_base, kk));
#pragma unroll
          for (int np = 0; np < S::kSTiles / 2; ++np) {
            uint32_t b[4];
            ldsm_x4(b, s_o + step_off(b_base, kk) + np * 16 * S::kRowBytes);
            mma_bf16(dp[2 * np], va, b[0], b[1]);
            mma_bf16(dp[2 * np + 1], va, b[2], b[3]);
          }
        }

        // dS^T = P^T (dP^T - D), packed to bf16 in place of P^T (invisible pairs: P = 0).
#pragma unroll
        for (int nt = 0; nt < S::kSTiles; ++nt) {
          const float2 dd = *reinterpret_cast<const float2*>(&s_d[buf][nt * 8 + 2 * t4]);
#pragma unroll
          for (int hf = 0; hf < 2; ++hf) {
            const float p0 = __uint_as_float(pb[nt][hf] << 16);
            const float p1 = __uint_as_float(pb[nt][hf] & 0xffff0000u);
            pb[nt][hf] = pack_bf16(p0 * (dp[nt][2 * hf] - dd.x), p1 * (dp[nt][2 * hf + 1] - dd.y));
          }
        }

        // dK += dS^T Q.
#pragma unroll
        for (int kc = 0; kc < kB / 16; ++kc) {
          const uint32_t ads[4] = {pb[2 * kc][0], pb[2 * kc][1], pb[2 * kc + 1][0],
                                   pb[2 * kc + 1][1]};
#pragma unroll
          for (int np = 0; np < S::kHdTiles / 2; ++np) {
            uint32_t b[4];
            ldsm_x4_trans(b, s_q + step_off(t_base, np) + kc * 16 * S::kRowBytes);
            mma_bf16(dk_acc[2 * np], ads, b[0], b[1]);
            mma_bf16(dk_acc[2 * np + 1], ads, b[2], b[3]);
          }
        }
      }
      __syncthreads();  // buffer t & 1 (and its lse / D) is refilled by the next iteration
    }
  }
  cp_async_wait<0>();

  // Each warp only ever read its own 16 rows of K and V: stage dK, dV there.
  bf16* dk_head = dk + int64_t(hk) * HD;
  bf16* dv_head = dv + int64_t(hk) * HD;
  store_rows<HD>(smem, dk_acc, scale, lane, warp_row0, k0, n, dk_head, kv_stride);
  store_rows<HD>(smem + S::kTileBytes, dv_acc, 1.0f, lane, warp_row0, k0, n, dv_head, kv_stride);
}

// ---------------------------------------------------------------------------------------
// dQ. Grid (ceil(N / 64), H), kThreads threads, BwdShape::kSmemBytes dynamic smem:
//   Q [64, HD] | dO [64, HD] | K0 | V0 | K1 | V1
template <int HD>
__global__ void __launch_bounds__(kThreads, 2)
    attention_backward_tc_dq_kernel(bf16* __restrict__ dq, const bf16* __restrict__ dout,
                                    const bf16* __restrict__ q, const bf16* __restrict__ k,
                                    const bf16* __restrict__ v, const float* __restrict__ lse,
                                    const float* __restrict__ dvec, int n, int n_heads,
                                    int n_kv_heads, AttentionPattern mask, float scale,
                                    float scale_log2) {
  using S = BwdShape<HD>;
  unsigned char* const smem = dynamic_smem();
  __shared__ int s_range[kWarps][2];

  const int tid = int(threadIdx.x), lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, t4 = lane & 3;
  const int h = int(blockIdx.y);
  const int hk = h / (n_heads / n_kv_heads);
  const int q0 = (int(gridDim.x) - 1 - int(blockIdx.x)) * kB;  // late rows see the most keys
  const int warp_row0 = warp * 16;
  const int64_t q_stride = int64_t(n_heads) * HD, kv_stride = int64_t(n_kv_heads) * HD;
  const uint32_t s_q = uint32_t(__cvta_generic_to_shared(smem));
  const uint32_t s_o = s_q + S::kTileBytes;
  const uint32_t s_kv = s_o + S::kTileBytes;  // buffer b: K at s_kv + 2b tiles, V after

  const int copy_chunk = tid % S::kChunks, copy_row = tid / S::kChunks;
  load_tile_rows<kB, S::kRowsPerPass, S::kRowBytes>(
      copy_row, copy_chunk, clipped_rows(q0, n, q_stride, int64_t(h) * HD, copy_chunk),
      TileCopy{s_q, q}, TileCopy{s_o, dout});
  cp_async_commit();

  // Key visit ranges, lse * log2 e and D of this thread's rows (g, g + 8); rows past N: empty.
  int row_first[2], row_last[2];
  float row_l2[2], row_d[2];
  int f_min = INT_MAX, f_max = INT_MIN, l_min = INT_MAX, l_max = INT_MIN;
#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    const int i = q0 + warp_row0 + g + 8 * hf;
    if (i < n) {
      const KeyRange kr = attn_key_range(mask, h, i);
      row_first[hf] = int(kr.first);
      row_last[hf] = int(kr.last);
      row_l2[hf] = lse[int64_t(h) * n + i] * kLog2e;
      row_d[hf] = dvec[int64_t(h) * n + i];
      f_min = min(f_min, row_first[hf]);
      f_max = max(f_max, row_first[hf]);
      l_min = min(l_min, row_last[hf]);
      l_max = max(l_max, row_last[hf]);
    } else {
      row_first[hf] = 1;
      row_last[hf] = 0;
      row_l2[hf] = 0.0f;
      row_d[hf] = 0.0f;
    }
  }
  warp_ranges(f_min, f_max, l_min, l_max);
  if (lane == 0) {
    s_range[warp][0] = f_min;
    s_range[warp][1] = l_max;
  }
  __syncthreads();
  int v_lo, v_hi;  // row q0 < N is valid: non-empty
  block_visit_union(s_range, v_lo, v_hi);
  const int n_tiles = (v_hi - v_lo) / kB + 1;
  const int64_t kv_shift =
      mask.mode == AttnMode::S2Roll ? attn_head_shift(mask, h) % int64_t(n) : 0;
  const bf16* k_head = k + int64_t(hk) * HD + copy_chunk * 8;
  const bf16* v_head = v + int64_t(hk) * HD + copy_chunk * 8;

  auto load_kv = [&](int buf, int v0) {
    const uint32_t s_k = s_kv + uint32_t(buf) * 2u * S::kTileBytes;
    load_kv_tile<kB, S::kRowsPerPass, S::kRowBytes>(s_k, s_k + S::kTileBytes, k_head, v_head, v0,
                                                    v_hi, kv_shift, n, kv_stride, copy_row,
                                                    copy_chunk);
  };

  load_kv(0, v_lo);
  cp_async_commit();

  const uint32_t a_base = lane_base<S::kRowBytes>(lane, warp_row0 + (lane & 15), lane >> 4);
  const uint32_t b_base =
      lane_base<S::kRowBytes>(lane, (lane & 7) + ((lane >> 4) << 3), (lane >> 3) & 1);
  const uint32_t t_base =
      lane_base<S::kRowBytes>(lane, (lane & 7) + (((lane >> 3) & 1) << 3), lane >> 4);

  float dq_acc[S::kHdTiles][4];
#pragma unroll
  for (int ot = 0; ot < S::kHdTiles; ++ot)
#pragma unroll
    for (int e = 0; e < 4; ++e) dq_acc[ot][e] = 0.0f;

#pragma unroll 1
  for (int t = 0; t < n_tiles; ++t) {
    const int v0 = v_lo + t * kB;
    if (t + 1 < n_tiles) load_kv((t + 1) & 1, v0 + kB);
    cp_async_commit();
    cp_async_wait<1>();  // Q, dO and tile t have landed
    __syncthreads();

    const bool skip = v0 > l_max || v0 + (kB - 1) < f_min;  // warp-uniform
    if (!skip) {
      const bool full = f_max <= v0 && v0 + (kB - 1) <= l_min;
      const uint32_t s_k = s_kv + uint32_t(t & 1) * 2u * S::kTileBytes;
      const uint32_t s_v = s_k + S::kTileBytes;

      // S = Q K^T, dP = dO V^T (queries x keys, fp32).
      float s[S::kSTiles][4], dp[S::kSTiles][4];
#pragma unroll
      for (int nt = 0; nt < S::kSTiles; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[nt][e] = dp[nt][e] = 0.0f;
#pragma unroll
      for (int kk = 0; kk < S::kKSteps; ++kk) {
        const uint32_t step = step_off(a_base, kk);
        uint32_t qa[4], oa[4];
        ldsm_x4(qa, s_q + step);
        ldsm_x4(oa, s_o + step);
#pragma unroll
        for (int np = 0; np < S::kSTiles / 2; ++np) {
          const uint32_t boff = step_off(b_base, kk) + np * 16 * S::kRowBytes;
          uint32_t b[4];
          ldsm_x4(b, s_k + boff);
          mma_bf16(s[2 * np], qa, b[0], b[1]);
          mma_bf16(s[2 * np + 1], qa, b[2], b[3]);
          ldsm_x4(b, s_v + boff);
          mma_bf16(dp[2 * np], oa, b[0], b[1]);
          mma_bf16(dp[2 * np + 1], oa, b[2], b[3]);
        }
      }

      // dS = P (dP - D) in place of dP; key column c is visit v0 + c.
#pragma unroll
      for (int nt = 0; nt < S::kSTiles; ++nt) {
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) {
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int vis_idx = v0 + nt * 8 + 2 * t4 + e;
            const bool vis = full || (row_first[hf] <= vis_idx && vis_idx <= row_last[hf]);
            const float p = vis ? exp2f(fmaf(s[nt][2 * hf + e], scale_log2, -row_l2[hf])) : 0.0f;
            dp[nt][2 * hf + e] = p * (dp[nt][2 * hf + e] - row_d[hf]);
          }
        }
      }

      // dQ += dS K (K rows are the k dimension: ldmatrix.trans).
#pragma unroll
      for (int kc = 0; kc < kB / 16; ++kc) {
        uint32_t ads[4];
        ads[0] = pack_bf16(dp[2 * kc][0], dp[2 * kc][1]);
        ads[1] = pack_bf16(dp[2 * kc][2], dp[2 * kc][3]);
        ads[2] = pack_bf16(dp[2 * kc + 1][0], dp[2 * kc + 1][1]);
        ads[3] = pack_bf16(dp[2 * kc + 1][2], dp[2 * kc + 1][3]);
#pragma unroll
        for (int np = 0; np < S::kHdTiles / 2; ++np) {
          uint32_t b[4];
          ldsm_x4_trans(b, s_k + step_off(t_base, np) + kc * 16 * S::kRowBytes);
          mma_bf16(dq_acc[2 * np], ads, b[0], b[1]);
          mma_bf16(dq_acc[2 * np + 1], ads, b[2], b[3]);
        }
      }
    }
    __syncthreads();  // buffer t & 1 is refilled by the next iteration's load
  }
  cp_async_wait<0>();

  // Each warp only read its own 16 rows of Q: stage dQ there.
  store_rows<HD>(smem, dq_acc, scale, lane, warp_row0, q0, n, dq + int64_t(h) * HD, q_stride);
}

// The launch sequence of attention_backward_tc after its argument checks, through
// `launch(name, kernel, grid, block, smem, args...)`; dvec: the [H, N] fp32 workspace.
template <int HD, typename Launcher>
void run_backward_tc_hd(const Launcher& launch, bf16* dq, bf16* dk, bf16* dv, const bf16* dout,
                        const bf16* q, const bf16* k, const bf16* v, const bf16* out,
                        const float* lse, float* dvec, int n, int n_heads, int n_kv_heads,
                        const AttentionPattern& mask) {
  using S = BwdShape<HD>;
  const float scale = float(1.0 / std::sqrt(double(HD)));
  const float scale_log2 = float(1.4426950408889634 / std::sqrt(double(HD)));

  const int64_t rows = int64_t(n) * n_heads;
  const int64_t row_blocks = std::min<int64_t>((rows + kWarps - 1) / kWarps, int64_t(1) << 20);
  launch("attention_tc_rowdot_kernel", attention_tc_rowdot_kernel<HD>, dim3(unsigned(row_blocks)),
         dim3(kThreads), size_t(0), dvec, dout, out, int64_t(n), n_heads);

  const unsigned tiles = unsigned((int64_t(n) + kB - 1) / kB);
  constexpr size_t smem = S::kSmemBytes;
  launch("attention_backward_tc_dkv_kernel", attention_backward_tc_dkv_kernel<HD>,
         dim3(tiles, unsigned(n_kv_heads)), dim3(kThreads), smem, dk, dv, dout, q, k, v, lse, dvec,
         n, n_heads, n_kv_heads, mask, scale, scale_log2);
  launch("attention_backward_tc_dq_kernel", attention_backward_tc_dq_kernel<HD>,
         dim3(tiles, unsigned(n_heads)), dim3(kThreads), smem, dq, dout, q, k, v, lse, dvec, n,
         n_heads, n_kv_heads, mask, scale, scale_log2);
}

}  // namespace bwd

template <typename Launcher>
void run_backward_tc(const Launcher& launch, bf16* dq, bf16* dk, bf16* dv, const bf16* dout,
                     const bf16* q, const bf16* k, const bf16* v, const bf16* out, const float* lse,
                     float* dvec, int n, int n_heads, int n_kv_heads, int head_dim,
                     const AttentionPattern& mask) {
  if (head_dim == 64)
    bwd::run_backward_tc_hd<64>(launch, dq, dk, dv, dout, q, k, v, out, lse, dvec, n, n_heads,
                                n_kv_heads, mask);
  else
    bwd::run_backward_tc_hd<128>(launch, dq, dk, dv, dout, q, k, v, out, lse, dvec, n, n_heads,
                                 n_kv_heads, mask);
}

}  // namespace ll::cuda::tc
