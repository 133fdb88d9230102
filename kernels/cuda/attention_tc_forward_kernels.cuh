#pragma once
// Tensor-core (mma.sync, sm_80+) flash attention forward kernel, FlashAttention-2 style, and its
// host launch sequence; contract in attention_tc.cuh. Internal: included by
// attention_tc_forward.cu (nvcc) and by the SIMT emulator's host build (tests/cuda_emu), which
// run the same kernel and sequence.
// Design (tiles, fragments, masking, shared memory): docs/subsystems/attention-kernels.md;
// registers and spills: bench/RESULTS.md.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <climits>
#include <cmath>
#include <cstdint>

#include "kernels/attention_pattern.h"
#include "kernels/cuda/attention_tc_common.cuh"

namespace ll::cuda::tc {

using bf16 = __nv_bfloat16;

namespace fwd {

constexpr int kWarps = 4;
constexpr int kThreads = 32 * kWarps;
constexpr int kBk = 64;                          // keys per tile
constexpr int64_t kMaxTokens = INT32_MAX - 256;  // visit indices and q0 + Bq stay in int

template <int HD, int kMT>
struct TcShape {
  static_assert(HD == 64 || HD == 128, "head dim 64 or 128");
  static constexpr int kWarpRows = 16 * kMT;      // query rows per warp
  static constexpr int kBq = kWarpRows * kWarps;  // query rows per block
  static constexpr int kChunks = HD / 8;          // 16-byte chunks per row
  static constexpr int kRowBytes = HD * 2;
  static constexpr int kRowsPerPass = kThreads / kChunks;  // rows one block-wide copy covers
  static constexpr int kKSteps = HD / 16;                  // k16 steps of Q K^T
  static constexpr int kSTiles = kBk / 8;                  // n8 tiles of S per m16 tile
  static constexpr int kOTiles = HD / 8;                   // n8 tiles of O per m16 tile
  static constexpr int kQBytes = kBq * kRowBytes;
  static constexpr int kKvBytes = kBk * kRowBytes;  // one K or V tile
  static constexpr int kSmemBytes = kQBytes + 4 * kKvBytes;
  static_assert(kThreads % kChunks == 0 && kBk % kRowsPerPass == 0 && kBq % kRowsPerPass == 0,
                "copy passes must tile the rows");
};

// Grid (ceil(N / Bq), H), kThreads threads, TcShape::kSmemBytes of dynamic shared memory.
// Fragment notation (PTX mma.m16n8k16): lane = 4 * g + t; a thread holds C rows g and g + 8,
// columns 2t and 2t + 1 of every n8 tile.
template <int HD, int kMT>
__global__ void __launch_bounds__(kThreads, 2)
    attention_forward_tc_kernel(bf16* __restrict__ out, float* __restrict__ lse,
                                const bf16* __restrict__ q, const bf16* __restrict__ k,
                                const bf16* __restrict__ v, int n, int n_heads, int n_kv_heads,
                                AttentionPattern mask, float scale, float scale_log2) {
  using S = TcShape<HD, kMT>;
  unsigned char* const smem = dynamic_smem();
  __shared__ int s_range[kWarps][2];  // per warp: first visit index, last visit index

  const int tid = int(threadIdx.x), lane = tid & 31, warp = tid >> 5;
  const int g = lane >> 2, t4 = lane & 3;
  const int h = int(blockIdx.y);
  const int hk = h / (n_heads / n_kv_heads);
  // Last query tile first: causal rows late in the sequence see the most keys.
  const int q0 = (int(gridDim.x) - 1 - int(blockIdx.x)) * S::kBq;
  const int warp_row0 = warp * S::kWarpRows;
  const int64_t q_stride = int64_t(n_heads) * HD, kv_stride = int64_t(n_kv_heads) * HD;
  const uint32_t s_q = uint32_t(__cvta_generic_to_shared(smem));
  const uint32_t s_kv = s_q + S::kQBytes;  // buffer b: K at s_kv + 2b tiles, V right after

  // Q tile -> shared (rows past N zero-filled). Group 0.
  const int copy_chunk = tid % S::kChunks, copy_row = tid / S::kChunks;
  load_tile_rows<S::kBq, S::kRowsPerPass, S::kRowBytes>(
      copy_row, copy_chunk, clipped_rows(q0, n, q_stride, int64_t(h) * HD, copy_chunk),
      TileCopy{s_q, q});
  cp_async_commit();

  // Key ranges (visit indices) of this thread's rows; rows past N get the empty range [1, 0].
  // Per warp over its valid rows: f_min/l_max bound the keys any row sees, f_max/l_min the
  // keys every row sees.
  int row_first[kMT][2], row_last[kMT][2];
  int f_min = INT_MAX, f_max = INT_MIN, l_min = INT_MAX, l_max = INT_MIN;
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      const int i = q0 + warp_row0 + mt * 16 + g + 8 * hf;
      if (i < n) {
        const KeyRange kr = attn_key_range(mask, h, i);
        const int f = int(kr.first), l = int(kr.last);
        row_first[mt][hf] = f;
        row_last[mt][hf] = l;
        f_min = min(f_min, f);
        f_max = max(f_max, f);
        l_min = min(l_min, l);
        l_max = max(l_max, l);
      } else {
        row_first[mt][hf] = 1;
        row_last[mt][hf] = 0;
      }
    }
  }
#pragma unroll
  for (int o = 4; o < 32; o <<= 1) {  // the 4 lanes of a quad hold the same rows
    f_min = min(f_min, __shfl_xor_sync(0xffffffffu, f_min, o));
    f_max = max(f_max, __shfl_xor_sync(0xffffffffu, f_max, o));
    l_min = min(l_min, __shfl_xor_sync(0xffffffffu, l_min, o));
    l_max = max(l_max, __shfl_xor_sync(0xffffffffu, l_max, o));
  }
  if (lane == 0) {
    s_range[warp][0] = f_min;
    s_range[warp][1] = l_max;
  }
  __syncthreads();
  int v_lo, v_hi;  // union over the block (row q0 < N is valid: non-empty)
  block_visit_union(s_range, v_lo, v_hi);
  const int n_tiles = (v_hi - v_lo) / kBk + 1;
  // Key position of visit index vis: vis + kv_shift, minus N past the end (S2Roll only).
  const int64_t kv_shift =
      mask.mode == AttnMode::S2Roll ? attn_head_shift(mask, h) % int64_t(n) : 0;
  const bf16* k_head = k + int64_t(hk) * HD + copy_chunk * 8;
  const bf16* v_head = v + int64_t(hk) * HD + copy_chunk * 8;

  // K, V tile of visit indices [v0, v0 + 64) -> buffer buf; visits past v_hi zero-filled.
  auto load_kv = [&](int buf, int v0) {
    const uint32_t s_k = s_kv + uint32_t(buf) * 2u * S::kKvBytes;
    load_kv_tile<kBk, S::kRowsPerPass, S::kRowBytes>(s_k, s_k + S::kKvBytes, k_head, v_head, v0,
                                                     v_hi, kv_shift, n, kv_stride, copy_row,
                                                     copy_chunk);
  };

  load_kv(0, v_lo);
  cp_async_commit();   // group 1
  cp_async_wait<1>();  // Q has landed (this thread's part)
  __syncthreads();     // ... and everyone's

  // Q fragments: A operand of m16 tile mt, k16 step kk. ldmatrix.x4 matrices: rows 0-7 /
  // 8-15 x columns 0-7 / 8-15; lane l addresses row l % 16, column half l / 16.
  uint32_t qf[kMT][S::kKSteps][4];
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
    for (int kk = 0; kk < S::kKSteps; ++kk) {
      const int row = warp_row0 + mt * 16 + (lane & 15);
      ldsm_x4(qf[mt][kk], s_q + swz<S::kRowBytes>(row, kk * 2 + (lane >> 4)));
    }
  }

  float o_acc[kMT][S::kOTiles][4];
  float m_run[kMT][2], l_run[kMT][2];  // running max (raw score) and this lane's partial sum
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
    for (int ot = 0; ot < S::kOTiles; ++ot)
#pragma unroll
      for (int e = 0; e < 4; ++e) o_acc[mt][ot][e] = 0.0f;
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      m_run[mt][hf] = -INFINITY;
      l_run[mt][hf] = 0.0f;
    }
  }

  // ldmatrix lane roles. K (B of Q K^T, non-transposed): matrices keys 0-7 | 0-7 | 8-15 | 8-15
  // x head-dim half 0 | 1 | 0 | 1 -> b0, b1 of n8 tile 2np, then of tile 2np + 1.
  // V (B of P V, transposed): keys 0-7 | 8-15 | 0-7 | 8-15 x head-dim half 0 | 0 | 1 | 1.
  // Addresses as this lane's offset for chunk pair j = step & 3 plus compile-time immediates:
  // row & 7 == lane & 7 for every 16-row block, and chunk (2 * step + half) ^ (lane & 7)
  // only depends on step & 3 below bit 3 (chunk bit 3 passes through the XOR unchanged).
  uint32_t k_off[4], v_off[4];
  {
    const int k_row = (lane & 7) + ((lane >> 4) << 3), k_half = (lane >> 3) & 1;
    const int v_row = (lane & 7) + (((lane >> 3) & 1) << 3), v_half = lane >> 4;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      k_off[j] = uint32_t(k_row * S::kRowBytes + (((2 * j + k_half) ^ (lane & 7)) << 4));
      v_off[j] = uint32_t(v_row * S::kRowBytes + (((2 * j + v_half) ^ (lane & 7)) << 4));
    }
  }

#pragma unroll 1
  for (int t = 0; t < n_tiles; ++t) {
    const int v0 = v_lo + t * kBk;
    if (t + 1 < n_tiles) load_kv((t + 1) & 1, v0 + kBk);
    cp_async_commit();   // possibly empty: keeps one group per iteration
    cp_async_wait<1>();  // tile t has landed
    __syncthreads();

    const bool skip = v0 > l_max || v0 + (kBk - 1) < f_min;  // warp-uniform
    if (!skip) {
      const bool full = f_max <= v0 && v0 + (kBk - 1) <= l_min;
      const uint32_t s_k = s_kv + uint32_t(t & 1) * 2u * S::kKvBytes;
      const uint32_t s_v = s_k + S::kKvBytes;

      // S = Q K^T (raw scores, fp32).
      float s[kMT][S::kSTiles][4];
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt)
#pragma unroll
        for (int nt = 0; nt < S::kSTiles; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) s[mt][nt][e] = 0.0f;
#pragma unroll
      for (int kk = 0; kk < S::kKSteps; ++kk) {
#pragma unroll
        for (int np = 0; np < S::kSTiles / 2; ++np) {
          uint32_t b[4];
          ldsm_x4(b, s_k + k_off[kk & 3] + (kk >> 2) * 128 + np * 16 * S::kRowBytes);
#pragma unroll
          for (int mt = 0; mt < kMT; ++mt) {
            mma_bf16(s[mt][2 * np], qf[mt][kk], b[0], b[1]);
            mma_bf16(s[mt][2 * np + 1], qf[mt][kk], b[2], b[3]);
          }
        }
      }

      // Per-element mask on partial tiles: key column c (visit v0 + c) is visible to a row
      // iff first <= v0 + c <= last.
      if (!full) {
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
          for (int hf = 0; hf < 2; ++hf) {
            const int lo = row_first[mt][hf] - v0, hi = row_last[mt][hf] - v0;
#pragma unroll
            for (int nt = 0; nt < S::kSTiles; ++nt) {
#pragma unroll
              for (int e = 0; e < 2; ++e) {
                const int c = nt * 8 + 2 * t4 + e;
                if (c < lo || c > hi) s[mt][nt][2 * hf + e] = -INFINITY;
              }
            }
          }
        }
      }

      // Online softmax: p = exp2(s * scale_log2 - m * scale_log2); O and l rescaled by alpha.
#pragma unroll
      for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
        for (int hf = 0; hf < 2; ++hf) {
          float mx = -INFINITY;
#pragma unroll
          for (int nt = 0; nt < S::kSTiles; ++nt)
            mx = fmaxf(mx, fmaxf(s[mt][nt][2 * hf], s[mt][nt][2 * hf + 1]));
          mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
          mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
          const float m_new = fmaxf(m_run[mt][hf], mx);
          // A row with nothing visible yet keeps m = -inf; subtract 0 then so that
          // exp2(-inf - (-inf)) never makes a NaN.
          const float m_base = m_new == -INFINITY ? 0.0f : m_new * scale_log2;
          const float alpha = exp2f(m_run[mt][hf] * scale_log2 - m_base);
          m_run[mt][hf] = m_new;
          float sum = 0.0f;
#pragma unroll
          for (int nt = 0; nt < S::kSTiles; ++nt) {
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              const float p = exp2f(fmaf(s[mt][nt][2 * hf + e], scale_log2, -m_base));
              s[mt][nt][2 * hf + e] = p;
              sum += p;
            }
          }
          l_run[mt][hf] = l_run[mt][hf] * alpha + sum;
#pragma unroll
          for (int ot = 0; ot < S::kOTiles; ++ot) {
            o_acc[mt][ot][2 * hf] *= alpha;
            o_acc[mt][ot][2 * hf + 1] *= alpha;
          }
        }
      }

      // O += P V. The C fragments of S tiles 2kc, 2kc + 1 are the A fragment of k16 step kc.
#pragma unroll
      for (int kc = 0; kc < kBk / 16; ++kc) {
        uint32_t a[kMT][4];
#pragma unroll
        for (int mt = 0; mt < kMT; ++mt) {
          a[mt][0] = pack_bf16(s[mt][2 * kc][0], s[mt][2 * kc][1]);
          a[mt][1] = pack_bf16(s[mt][2 * kc][2], s[mt][2 * kc][3]);
          a[mt][2] = pack_bf16(s[mt][2 * kc + 1][0], s[mt][2 * kc + 1][1]);
          a[mt][3] = pack_bf16(s[mt][2 * kc + 1][2], s[mt][2 * kc + 1][3]);
        }
#pragma unroll
        for (int np = 0; np < S::kOTiles / 2; ++np) {
          uint32_t b[4];
          ldsm_x4_trans(b, s_v + v_off[np & 3] + (np >> 2) * 128 + kc * 16 * S::kRowBytes);
#pragma unroll
          for (int mt = 0; mt < kMT; ++mt) {
            mma_bf16(o_acc[mt][2 * np], a[mt], b[0], b[1]);
            mma_bf16(o_acc[mt][2 * np + 1], a[mt], b[2], b[3]);
          }
        }
      }
    }
    __syncthreads();  // buffer t & 1 is refilled by the next iteration's load
  }
  cp_async_wait<0>();

  // Epilogue: O / l as bf16 into this warp's own rows of the Q tile (only this warp read
  // them, before the loop), then 16-byte stores of whole rows.
#pragma unroll
  for (int mt = 0; mt < kMT; ++mt) {
#pragma unroll
    for (int hf = 0; hf < 2; ++hf) {
      float l = l_run[mt][hf];
      l += __shfl_xor_sync(0xffffffffu, l, 1);
      l += __shfl_xor_sync(0xffffffffu, l, 2);
      // Every valid row sees at least itself (l >= 1); guard the division anyway.
      const float inv = l > 0.0f ? 1.0f / l : 0.0f;
      const int row = warp_row0 + mt * 16 + g + 8 * hf;
#pragma unroll
      for (int ot = 0; ot < S::kOTiles; ++ot) {
        const uint32_t packed =
            pack_bf16(o_acc[mt][ot][2 * hf] * inv, o_acc[mt][ot][2 * hf + 1] * inv);
        *reinterpret_cast<uint32_t*>(smem + swz<S::kRowBytes>(row, ot) + 4 * t4) = packed;
      }
      const int i = q0 + row;
      if (lse != nullptr && t4 == 0 && i < n)
        lse[int64_t(h) * n + i] = l > 0.0f ? m_run[mt][hf] * scale + logf(l) : -INFINITY;
    }
  }
  __syncwarp();
  constexpr int kWarpChunks = S::kWarpRows * S::kChunks;
  static_assert(kWarpChunks % 32 == 0, "whole warp passes");
#pragma unroll
  for (int p = 0; p < kWarpChunks / 32; ++p) {
    const int c = lane + 32 * p;
    const int row = warp_row0 + c / S::kChunks, ch = c % S::kChunks;
    const int i = q0 + row;
    if (i < n) {
      const uint4 val = *reinterpret_cast<const uint4*>(smem + swz<S::kRowBytes>(row, ch));
      *reinterpret_cast<uint4*>(out + int64_t(i) * q_stride + int64_t(h) * HD + ch * 8) = val;
    }
  }
}

// The launch sequence (grid, block, shared memory, scales) of attention_forward_tc after its
// argument checks, through `launch(name, kernel, grid, block, smem, args...)`.
template <int HD, int kMT, typename Launcher>
void run_forward_tc_hd(const Launcher& launch, bf16* out, float* lse, const bf16* q, const bf16* k,
                       const bf16* v, int n, int n_heads, int n_kv_heads,
                       const AttentionPattern& mask) {
  using S = TcShape<HD, kMT>;
  const float scale = float(1.0 / std::sqrt(double(HD)));
  const float scale_log2 = float(1.4426950408889634 / std::sqrt(double(HD)));  // log2(e)/sqrt
  const dim3 grid(unsigned((int64_t(n) + S::kBq - 1) / S::kBq), unsigned(n_heads));
  launch("attention_forward_tc_kernel", attention_forward_tc_kernel<HD, kMT>, grid,
         dim3(fwd::kThreads), size_t(S::kSmemBytes), out, lse, q, k, v, n, n_heads, n_kv_heads,
         mask, scale, scale_log2);
}

}  // namespace fwd

template <typename Launcher>
void run_forward_tc(const Launcher& launch, bf16* out, float* lse, const bf16* q, const bf16* k,
                    const bf16* v, int n, int n_heads, int n_kv_heads, int head_dim,
                    const AttentionPattern& mask) {
  if (head_dim == 64)
    fwd::run_forward_tc_hd<64, 2>(launch, out, lse, q, k, v, n, n_heads, n_kv_heads, mask);
  else
    fwd::run_forward_tc_hd<128, 1>(launch, out, lse, q, k, v, n, n_heads, n_kv_heads, mask);
}

}  // namespace ll::cuda::tc
