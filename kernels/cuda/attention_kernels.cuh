#pragma once
// Tiled flash-style attention kernels on CUDA cores, forward and backward (contract in
// attention.cuh), and their host launch sequences: 128 threads, 32-row tiles, fp32 tiles in
// shared memory, online softmax; the backward recomputes P and sums every gradient in a fixed
// order (deterministic, no atomics). Internal: included by attention.cu (nvcc) and by the SIMT
// emulator's tests (tests/cuda_emu), which run the same kernels and sequences.
// Design: docs/subsystems/attention-kernels.md.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "kernels/attention_pattern.h"
#include "kernels/cuda/attention_ranges.h"
#include "kernels/cuda/dynamic_smem.cuh"

namespace ll::cuda::attn_dev {

using bf16 = __nv_bfloat16;

constexpr int kB = 32;         // rows per query tile and per key tile
constexpr int kThreads = 128;  // threads per block
constexpr int kWarps = kThreads / 32;
constexpr int kSLd = kB + 1;  // row stride of the [32, 32] score tiles

template <int HD>
struct Tile {
  static constexpr int kLd = HD + 1;                     // row stride of a [32, HD] tile
  static constexpr int kFloats = kB * kLd;               // floats of one [32, HD] tile
  static constexpr int kPerThread = kB * HD / kThreads;  // tile elements each thread owns
  static_assert(HD % 32 == 0 && (kB * HD) % kThreads == 0, "head dim must be a multiple of 32");
};
constexpr int kScoreFloats = kB * kSLd;

__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}

__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

// Loads 32 rows of HD bf16 values into a [32, HD + 1] fp32 shared tile. src_row(r) gives the
// element offset of row r in global memory, or -1 for a row to fill with zeros.
template <int HD, typename RowFn>
__device__ __forceinline__ void load_tile(float* dst, const bf16* src, RowFn src_row) {
  constexpr int kPairs = HD / 2;
  for (int e = threadIdx.x; e < kB * kPairs; e += kThreads) {
    const int r = e / kPairs;
    const int c = (e % kPairs) * 2;
    const int64_t off = src_row(r);
    float2 x = make_float2(0.0f, 0.0f);
    if (off >= 0) x = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(src + off + c));
    dst[r * Tile<HD>::kLd + c] = x.x;
    dst[r * Tile<HD>::kLd + c + 1] = x.y;
  }
}

// Union [lo, hi] of 32 inclusive ranges (empty ones have first > last). Thread 0 only.
__device__ __forceinline__ void range_union(const int64_t* first, const int64_t* last,
                                            int64_t* out) {
  int64_t lo = INT64_MAX, hi = -1;
  for (int r = 0; r < kB; ++r) {
    if (first[r] > last[r]) continue;
    lo = first[r] < lo ? first[r] : lo;
    hi = last[r] > hi ? last[r] : hi;
  }
  out[0] = lo;
  out[1] = hi;  // hi < lo when every range is empty: loops over [lo, hi] then do nothing
}

// ---------------------------------------------------------------------------------------
// Forward. Grid (ceil(N / 32), H). Dynamic shared memory: Q, K, V tiles + score tile.
template <int HD>
__global__ void __launch_bounds__(kThreads, 1)
    attention_forward_kernel(bf16* __restrict__ out, float* __restrict__ lse,
                             const bf16* __restrict__ q, const bf16* __restrict__ k,
                             const bf16* __restrict__ v, int64_t n, int n_heads, int n_kv_heads,
                             AttentionPattern mask, float scale) {
  using T = Tile<HD>;
  float* const smem = dynamic_smem<float>();
  float* sQ = smem;
  float* sK = sQ + T::kFloats;
  float* sV = sK + T::kFloats;
  float* sS = sV + T::kFloats;  // [32, 33] scores, then probabilities
  __shared__ int64_t sFirst[kB], sLast[kB], sRange[2];
  __shared__ float sM[kB], sL[kB], sAlpha[kB];

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int h = blockIdx.y;
  const int hk = h / (n_heads / n_kv_heads);
  const int64_t q0 = int64_t(blockIdx.x) * kB;
  const int64_t q_stride = int64_t(n_heads) * HD, kv_stride = int64_t(n_kv_heads) * HD;

  if (tid < kB) {
    const int64_t i = q0 + tid;
    if (i < n) {
      const KeyRange r = attn_key_range(mask, h, i);
      sFirst[tid] = r.first;
      sLast[tid] = r.last;
    } else {
      sFirst[tid] = 1;
      sLast[tid] = 0;
    }
    sM[tid] = -INFINITY;
    sL[tid] = 0.0f;
  }
  load_tile<HD>(sQ, q, [&](int r) { return q0 + r < n ? (q0 + r) * q_stride + h * HD : -1; });
  __syncthreads();
  if (tid == 0) range_union(sFirst, sLast, sRange);
  __syncthreads();
  const int64_t v_lo = sRange[0], v_hi = sRange[1];

  float acc[T::kPerThread];
#pragma unroll
  for (int t = 0; t < T::kPerThread; ++t) acc[t] = 0.0f;

  for (int64_t v0 = v_lo; v0 <= v_hi; v0 += kB) {
    __syncthreads();  // the previous tile's K, V and probabilities are no longer read
    auto kv_row = [&](int r) -> int64_t {
      const int64_t vis = v0 + r;
      if (vis > v_hi) return -1;
      return attn_key_of_visit(mask, h, vis) * kv_stride + hk * HD;
    };
    load_tile<HD>(sK, k, kv_row);
    load_tile<HD>(sV, v, kv_row);
    __syncthreads();
    // Scores: element e -> (query row e / 32, key column e % 32); a warp shares one row.
#pragma unroll 1
    for (int t = 0; t < kB * kB / kThreads; ++t) {
      const int e = tid + kThreads * t;
      const int i = e / kB, j = e % kB;
      const int64_t vis = v0 + j;
      float s = -INFINITY;
      if (sFirst[i] <= vis && vis <= sLast[i]) {
        float dot = 0.0f;
#pragma unroll 16
        for (int d = 0; d < HD; ++d) dot = fmaf(sQ[i * T::kLd + d], sK[j * T::kLd + d], dot);
        s = dot * scale;
      }
      sS[i * kSLd + j] = s;
    }
    __syncthreads();
    // Online softmax statistics: one warp per row, lane = key column.
    for (int i = warp; i < kB; i += kWarps) {
      const float s = sS[i * kSLd + lane];
      const float m_old = sM[i];
      const float m_new = fmaxf(m_old, warp_max(s));
      const bool none = m_new == -INFINITY;  // no visible key for this row yet
      const float p = none ? 0.0f : expf(s - m_new);
      const float alpha = none ? 1.0f : expf(m_old - m_new);
      const float sum = warp_sum(p);
      sS[i * kSLd + lane] = p;
      __syncwarp();
      if (lane == 0) {
        sL[i] = sL[i] * alpha + sum;
        sM[i] = m_new;
        sAlpha[i] = alpha;
      }
    }
    __syncthreads();
    // O = alpha * O + P V. Element e -> (row e / HD, dim e % HD).
#pragma unroll
    for (int t = 0; t < T::kPerThread; ++t) {
      const int e = tid + kThreads * t;
      const int i = e / HD, d = e % HD;
      float a = acc[t] * sAlpha[i];
#pragma unroll 8
      for (int j = 0; j < kB; ++j) a = fmaf(sS[i * kSLd + j], sV[j * T::kLd + d], a);
      acc[t] = a;
    }
  }
  __syncthreads();
#pragma unroll
  for (int t = 0; t < T::kPerThread; ++t) {
    const int e = tid + kThreads * t;
    const int i = e / HD, d = e % HD;
    if (q0 + i < n) {
      // l >= 1 for every valid row: the row maximum contributes exp(0).
      out[(q0 + i) * q_stride + h * HD + d] = __float2bfloat16(acc[t] / sL[i]);
    }
  }
  if (lse != nullptr && tid < kB && q0 + tid < n)
    lse[int64_t(h) * n + q0 + tid] = sM[tid] + logf(sL[tid]);
}

// ---------------------------------------------------------------------------------------
// D[h, i] = sum_d dout[i, h, d] * out[i, h, d]. One warp per (token, head) row, grid-stride
// (the grid is capped at kRowdotMaxBlocks: N * H / 4 blocks would pass the grid limit of
// 2^31 - 1 at N * H = 2^33).
constexpr int64_t kRowdotMaxBlocks = int64_t(1) << 20;
template <int HD>
__global__ void __launch_bounds__(kThreads)
    attention_rowdot_kernel(float* __restrict__ dvec, const bf16* __restrict__ dout,
                            const bf16* __restrict__ out, int64_t n, int n_heads) {
  const int lane = threadIdx.x & 31;
  const int64_t rows = n * n_heads;
  for (int64_t row = int64_t(blockIdx.x) * kWarps + (threadIdx.x >> 5); row < rows;
       row += int64_t(gridDim.x) * kWarps) {
    const int64_t i = row / n_heads;
    const int h = int(row % n_heads);
    const int64_t base = row * HD;  // [N, H, HD] row-major: (i, h) is row i * H + h
    float s = 0.0f;
#pragma unroll
    for (int d0 = 0; d0 < HD; d0 += 32)
      s = fmaf(__bfloat162float(dout[base + d0 + lane]), __bfloat162float(out[base + d0 + lane]),
               s);
    s = warp_sum(s);
    if (lane == 0) dvec[int64_t(h) * n + i] = s;
  }
}

// ---------------------------------------------------------------------------------------
// dK, dV. Grid (ceil(N / 32), Hkv). Dynamic shared memory: K, V, Q, dO tiles + P, dS tiles.
template <int HD>
__global__ void __launch_bounds__(kThreads, 1)
    attention_backward_dkv_kernel(bf16* __restrict__ dk, bf16* __restrict__ dv,
                                  const bf16* __restrict__ dout, const bf16* __restrict__ q,
                                  const bf16* __restrict__ k, const bf16* __restrict__ v,
                                  const float* __restrict__ lse, const float* __restrict__ dvec,
                                  int64_t n, int n_heads, int n_kv_heads, AttentionPattern mask,
                                  float scale) {
  using T = Tile<HD>;
  float* const smem = dynamic_smem<float>();
  float* sK = smem;
  float* sV = sK + T::kFloats;
  float* sQ = sV + T::kFloats;
  float* sO = sQ + T::kFloats;    // dO tile
  float* sP = sO + T::kFloats;    // [32 keys, 33] probabilities
  float* sG = sP + kScoreFloats;  // [32 keys, 33] dS
  __shared__ int64_t sVis[kB], sQFirst[kB], sQLast[kB], sRange[2];
  __shared__ int64_t sFirst[kB], sLast[kB];
  __shared__ float sLse[kB], sD[kB];

  const int tid = threadIdx.x;
  const int hk = blockIdx.y;
  const int group = n_heads / n_kv_heads;
  const int64_t k0 = int64_t(blockIdx.x) * kB;
  const int64_t q_stride = int64_t(n_heads) * HD, kv_stride = int64_t(n_kv_heads) * HD;

  auto kv_row = [&](int r) -> int64_t { return k0 + r < n ? (k0 + r) * kv_stride + hk * HD : -1; };
  load_tile<HD>(sK, k, kv_row);
  load_tile<HD>(sV, v, kv_row);

  float acc_k[T::kPerThread], acc_v[T::kPerThread];
#pragma unroll
  for (int t = 0; t < T::kPerThread; ++t) acc_k[t] = acc_v[t] = 0.0f;

  for (int g = 0; g < group; ++g) {
    const int h = hk * group + g;
    __syncthreads();  // the previous head's sVis / sRange are no longer read
    if (tid < kB) {
      const int64_t j = k0 + tid;
      if (j < n) {
        sVis[tid] = attn_visit_of_key(mask, h, j);
        const QueryRange r = attn_query_range(mask, h, j);
        sQFirst[tid] = r.first;
        sQLast[tid] = r.last;
      } else {
        sVis[tid] = -1;  // below every key range: never visible
        sQFirst[tid] = 1;
        sQLast[tid] = 0;
      }
    }
    __syncthreads();
    if (tid == 0) range_union(sQFirst, sQLast, sRange);
    __syncthreads();
    const int64_t u_lo = sRange[0], u_hi = sRange[1];

    for (int64_t u0 = u_lo; u0 <= u_hi; u0 += kB) {
      __syncthreads();  // the previous query tile is no longer read
      auto q_row = [&](int r) -> int64_t {
        const int64_t u = u0 + r;
        if (u > u_hi) return -1;
        return attn_query_of_visit(mask, h, u) * q_stride + h * HD;
      };
      load_tile<HD>(sQ, q, q_row);
      load_tile<HD>(sO, dout, q_row);
      if (tid < kB) {
        const int64_t u = u0 + tid;
        if (u <= u_hi) {
          const int64_t i = attn_query_of_visit(mask, h, u);
          const KeyRange r = attn_key_range(mask, h, i);
          sFirst[tid] = r.first;
          sLast[tid] = r.last;
          sLse[tid] = lse[int64_t(h) * n + i];
          sD[tid] = dvec[int64_t(h) * n + i];
        } else {
          sFirst[tid] = 1;
          sLast[tid] = 0;
          sLse[tid] = 0.0f;
          sD[tid] = 0.0f;
        }
      }
      __syncthreads();
      // P, dS: element e -> (key row e / 32, query column e % 32); a warp shares one key.
#pragma unroll 1
      for (int t = 0; t < kB * kB / kThreads; ++t) {
        const int e = tid + kThreads * t;
        const int j = e / kB, i = e % kB;
        const int64_t vis = sVis[j];
        float p = 0.0f, ds = 0.0f;
        if (sFirst[i] <= vis && vis <= sLast[i]) {
          float s = 0.0f, dp = 0.0f;
#pragma unroll 16
          for (int d = 0; d < HD; ++d) {
            s = fmaf(sK[j * T::kLd + d], sQ[i * T::kLd + d], s);
            dp = fmaf(sV[j * T::kLd + d], sO[i * T::kLd + d], dp);
          }
          p = expf(s * scale - sLse[i]);
          ds = p * (dp - sD[i]);
        }
        sP[j * kSLd + i] = p;
        sG[j * kSLd + i] = ds;
      }
      __syncthreads();
      // dV += P dO, dK += dS Q. Element e -> (key row e / HD, dim e % HD).
#pragma unroll
      for (int t = 0; t < T::kPerThread; ++t) {
        const int e = tid + kThreads * t;
        const int j = e / HD, d = e % HD;
        float a_k = acc_k[t], a_v = acc_v[t];
#pragma unroll 8
        for (int i = 0; i < kB; ++i) {
          a_v = fmaf(sP[j * kSLd + i], sO[i * T::kLd + d], a_v);
          a_k = fmaf(sG[j * kSLd + i], sQ[i * T::kLd + d], a_k);
        }
        acc_k[t] = a_k;
        acc_v[t] = a_v;
      }
    }
  }
#pragma unroll
  for (int t = 0; t < T::kPerThread; ++t) {
    const int e = tid + kThreads * t;
    const int j = e / HD, d = e % HD;
    if (k0 + j < n) {
      const int64_t off = (k0 + j) * kv_stride + hk * HD + d;
      dk[off] = __float2bfloat16(acc_k[t] * scale);
      dv[off] = __float2bfloat16(acc_v[t]);
    }
  }
}

// ---------------------------------------------------------------------------------------
// dQ. Grid (ceil(N / 32), H). Dynamic shared memory: Q, dO, K, V tiles + dS tile.
template <int HD>
__global__ void __launch_bounds__(kThreads, 1)
    attention_backward_dq_kernel(bf16* __restrict__ dq, const bf16* __restrict__ dout,
                                 const bf16* __restrict__ q, const bf16* __restrict__ k,
                                 const bf16* __restrict__ v, const float* __restrict__ lse,
                                 const float* __restrict__ dvec, int64_t n, int n_heads,
                                 int n_kv_heads, AttentionPattern mask, float scale) {
  using T = Tile<HD>;
  float* const smem = dynamic_smem<float>();
  float* sQ = smem;
  float* sO = sQ + T::kFloats;
  float* sK = sO + T::kFloats;
  float* sV = sK + T::kFloats;
  float* sG = sV + T::kFloats;  // [32 queries, 33] dS
  __shared__ int64_t sFirst[kB], sLast[kB], sRange[2];
  __shared__ float sLse[kB], sD[kB];

  const int tid = threadIdx.x;
  const int h = blockIdx.y;
  const int hk = h / (n_heads / n_kv_heads);
  const int64_t q0 = int64_t(blockIdx.x) * kB;
  const int64_t q_stride = int64_t(n_heads) * HD, kv_stride = int64_t(n_kv_heads) * HD;

  if (tid < kB) {
    const int64_t i = q0 + tid;
    if (i < n) {
      const KeyRange r = attn_key_range(mask, h, i);
      sFirst[tid] = r.first;
      sLast[tid] = r.last;
      sLse[tid] = lse[int64_t(h) * n + i];
      sD[tid] = dvec[int64_t(h) * n + i];
    } else {
      sFirst[tid] = 1;
      sLast[tid] = 0;
      sLse[tid] = 0.0f;
      sD[tid] = 0.0f;
    }
  }
  auto q_row = [&](int r) -> int64_t { return q0 + r < n ? (q0 + r) * q_stride + h * HD : -1; };
  load_tile<HD>(sQ, q, q_row);
  load_tile<HD>(sO, dout, q_row);
  __syncthreads();
  if (tid == 0) range_union(sFirst, sLast, sRange);
  __syncthreads();
  const int64_t v_lo = sRange[0], v_hi = sRange[1];

  float acc[T::kPerThread];
#pragma unroll
  for (int t = 0; t < T::kPerThread; ++t) acc[t] = 0.0f;

  for (int64_t v0 = v_lo; v0 <= v_hi; v0 += kB) {
    __syncthreads();  // the previous key tile and dS are no longer read
    auto kv_row = [&](int r) -> int64_t {
      const int64_t vis = v0 + r;
      if (vis > v_hi) return -1;
      return attn_key_of_visit(mask, h, vis) * kv_stride + hk * HD;
    };
    load_tile<HD>(sK, k, kv_row);
    load_tile<HD>(sV, v, kv_row);
    __syncthreads();
    // dS: element e -> (query row e / 32, key column e % 32); a warp shares one query.
#pragma unroll 1
    for (int t = 0; t < kB * kB / kThreads; ++t) {
      const int e = tid + kThreads * t;
      const int i = e / kB, j = e % kB;
      const int64_t vis = v0 + j;
      float ds = 0.0f;
      if (sFirst[i] <= vis && vis <= sLast[i]) {
        float s = 0.0f, dp = 0.0f;
#pragma unroll 16
        for (int d = 0; d < HD; ++d) {
          s = fmaf(sQ[i * T::kLd + d], sK[j * T::kLd + d], s);
          dp = fmaf(sO[i * T::kLd + d], sV[j * T::kLd + d], dp);
        }
        const float p = expf(s * scale - sLse[i]);
        ds = p * (dp - sD[i]);
      }
      sG[i * kSLd + j] = ds;
    }
    __syncthreads();
    // dQ += dS K. Element e -> (query row e / HD, dim e % HD).
#pragma unroll
    for (int t = 0; t < T::kPerThread; ++t) {
      const int e = tid + kThreads * t;
      const int i = e / HD, d = e % HD;
      float a = acc[t];
#pragma unroll 8
      for (int j = 0; j < kB; ++j) a = fmaf(sG[i * kSLd + j], sK[j * T::kLd + d], a);
      acc[t] = a;
    }
  }
#pragma unroll
  for (int t = 0; t < T::kPerThread; ++t) {
    const int e = tid + kThreads * t;
    const int i = e / HD, d = e % HD;
    if (q0 + i < n) dq[(q0 + i) * q_stride + h * HD + d] = __float2bfloat16(acc[t] * scale);
  }
}

// ---------------------------------------------------------------------------------------
// Host side.

template <int HD>
constexpr size_t forward_smem() {
  return size_t(3 * Tile<HD>::kFloats + kScoreFloats) * sizeof(float);
}
template <int HD>
constexpr size_t dkv_smem() {
  return size_t(4 * Tile<HD>::kFloats + 2 * kScoreFloats) * sizeof(float);
}
template <int HD>
constexpr size_t dq_smem() {
  return size_t(4 * Tile<HD>::kFloats + kScoreFloats) * sizeof(float);
}

// The launch sequence of attention_forward after its argument checks, through
// `launch(name, kernel, grid, block, smem, args...)`.
template <int HD, typename Launcher>
void run_forward_hd(const Launcher& launch, bf16* out, float* lse, const bf16* q, const bf16* k,
                    const bf16* v, int64_t n, int n_heads, int n_kv_heads,
                    const AttentionPattern& mask) {
  const float scale = 1.0f / std::sqrt(float(HD));
  const dim3 grid(unsigned((n + kB - 1) / kB), unsigned(n_heads));
  launch("attention_forward_kernel", attention_forward_kernel<HD>, grid, dim3(kThreads),
         forward_smem<HD>(), out, lse, q, k, v, n, n_heads, n_kv_heads, mask, scale);
}

template <typename Launcher>
void run_forward(const Launcher& launch, bf16* out, float* lse, const bf16* q, const bf16* k,
                 const bf16* v, int64_t n, int n_heads, int n_kv_heads, int64_t head_dim,
                 const AttentionPattern& mask) {
  if (head_dim == 32)
    run_forward_hd<32>(launch, out, lse, q, k, v, n, n_heads, n_kv_heads, mask);
  else if (head_dim == 64)
    run_forward_hd<64>(launch, out, lse, q, k, v, n, n_heads, n_kv_heads, mask);
  else
    run_forward_hd<128>(launch, out, lse, q, k, v, n, n_heads, n_kv_heads, mask);
}

// The launch sequence of attention_backward after its argument checks; dvec: the [H, N] fp32
// workspace.
template <int HD, typename Launcher>
void run_backward_hd(const Launcher& launch, bf16* dq, bf16* dk, bf16* dv, const bf16* dout,
                     const bf16* q, const bf16* k, const bf16* v, const bf16* out, const float* lse,
                     float* dvec, int64_t n, int n_heads, int n_kv_heads,
                     const AttentionPattern& mask) {
  const float scale = 1.0f / std::sqrt(float(HD));
  const int64_t rows = n * n_heads;
  const int64_t row_blocks = std::min((rows + kWarps - 1) / kWarps, kRowdotMaxBlocks);
  launch("attention_rowdot_kernel", attention_rowdot_kernel<HD>, dim3(unsigned(row_blocks)),
         dim3(kThreads), size_t(0), dvec, dout, out, n, n_heads);
  const unsigned tiles = unsigned((n + kB - 1) / kB);
  launch("attention_backward_dkv_kernel", attention_backward_dkv_kernel<HD>,
         dim3(tiles, unsigned(n_kv_heads)), dim3(kThreads), dkv_smem<HD>(), dk, dv, dout, q, k, v,
         lse, dvec, n, n_heads, n_kv_heads, mask, scale);
  launch("attention_backward_dq_kernel", attention_backward_dq_kernel<HD>,
         dim3(tiles, unsigned(n_heads)), dim3(kThreads), dq_smem<HD>(), dq, dout, q, k, v, lse,
         dvec, n, n_heads, n_kv_heads, mask, scale);
}

template <typename Launcher>
void run_backward(const Launcher& launch, bf16* dq, bf16* dk, bf16* dv, const bf16* dout,
                  const bf16* q, const bf16* k, const bf16* v, const bf16* out, const float* lse,
                  float* dvec, int64_t n, int n_heads, int n_kv_heads, int64_t head_dim,
                  const AttentionPattern& mask) {
  if (head_dim == 32)
    run_backward_hd<32>(launch, dq, dk, dv, dout, q, k, v, out, lse, dvec, n, n_heads, n_kv_heads,
                        mask);
  else if (head_dim == 64)
    run_backward_hd<64>(launch, dq, dk, dv, dout, q, k, v, out, lse, dvec, n, n_heads, n_kv_heads,
                        mask);
  else
    run_backward_hd<128>(launch, dq, dk, dv, dout, q, k, v, out, lse, dvec, n, n_heads, n_kv_heads,
                         mask);
}

}  // namespace ll::cuda::attn_dev
