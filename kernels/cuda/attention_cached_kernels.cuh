#pragma once
// Cached (decode) attention kernels, split over keys (see attention_cached.cuh), their work
// plan and launch sequence. Internal: included by attention_cached.cu (nvcc) and by the SIMT
// emulator's tests (tests/cuda_emu).
//
// partial kernel: 128 threads = 4 warps per block; the block owns query i, kv head g, up to
//   kHeadsPerPass query heads of g's group and one chunk of keys. Warp w walks keys
//   chunk_lo + w, + 4, ...; lane l holds dims [l * E, l * E + E) (E = hd / 32) of the keys,
//   values, queries and accumulators, so a K/V row is one coalesced 2*hd-byte read shared by
//   every head of the pass. Per key and head: score by a warp butterfly sum, then the online
//   softmax update (running max m, sum l, output accumulator). The 4 warps' states are merged
//   in shared memory; with one chunk per query the result is normalised and written as bf16,
//   else (m, l, acc) go to the fp32 workspace.
// combine kernel: one block of hd threads per (query, head) row merges the chunks in chunk
//   order: out = sum_s acc_s e^(m_s - M) / sum_s l_s e^(m_s - M), M = max_s m_s. Chunks past
//   a query's last key are empty (m = -inf) and weigh 0.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace ll::cuda::cached_dev {

using bf16 = __nv_bfloat16;

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kHeadsPerPass = 8;           // query heads sharing one walk over the keys
constexpr int64_t kMinKeysPerSplit = 256;  // below this a chunk is not worth a partial
constexpr int64_t kTargetBlocks = 8192;    // enough to fill any GPU many times over

// How the work is cut: `splits` chunks of `keys_per_split` keys per (query, kv head, pass).
struct CachedPlan {
  int64_t passes = 1;
  int64_t splits = 1;
  int64_t keys_per_split = 1;
};

inline CachedPlan make_plan(int64_t n, int64_t past, int64_t n_heads, int64_t n_kv_heads) {
  CachedPlan p;
  const int64_t group = n_heads / n_kv_heads;
  p.passes = (group + kHeadsPerPass - 1) / kHeadsPerPass;
  const int64_t base_blocks = std::max<int64_t>(1, n * n_kv_heads * p.passes);
  const int64_t n_keys = past + n;
  const int64_t wanted = (n_keys + kMinKeysPerSplit - 1) / kMinKeysPerSplit;
  p.splits = std::max<int64_t>(1, std::min(wanted, kTargetBlocks / base_blocks));
  p.keys_per_split = (n_keys + p.splits - 1) / p.splits;
  p.splits = (n_keys + p.keys_per_split - 1) / p.keys_per_split;  // no chunk past the cache
  return p;
}

__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

// E consecutive bf16 values as fp32 (E = 1: scalar; E >= 2: bf16 pairs, 4-byte aligned).
template <int E>
__device__ __forceinline__ void load_row(const bf16* p, float (&f)[E]) {
  if constexpr (E == 1) {
    f[0] = __bfloat162float(p[0]);
  } else {
#pragma unroll
    for (int e = 0; e < E; e += 2) {
      const float2 t = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(p + e));
      f[e] = t.x;
      f[e + 1] = t.y;
    }
  }
}

// Grid (n * Hkv * passes, splits). part_acc [splits, n * H, HD], part_ml [splits, n * H, 2];
// unused (null) when splits == 1, which writes `out` directly.
// __launch_bounds__(kThreads, 4): with no minimum-blocks hint ptxas gave hd=64 64 registers
// and spilled; 4 blocks per SM allow 128, which every head dim fits.
template <int HD>
__global__ void __launch_bounds__(kThreads, 4)
    attention_cached_partial_kernel(bf16* __restrict__ out, float* __restrict__ part_acc,
                                    float* __restrict__ part_ml, const bf16* __restrict__ q,
                                    const bf16* __restrict__ k, const bf16* __restrict__ v,
                                    int64_t n, int64_t past, int n_heads, int n_kv_heads,
                                    int passes, int64_t keys_per_split, float scale) {
  constexpr int E = HD / 32;  // dims per lane
  __shared__ float sM[kWarps][kHeadsPerPass], sL[kWarps][kHeadsPerPass];
  __shared__ float sAcc[kWarps][kHeadsPerPass][HD];

  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int64_t bx = blockIdx.x;
  const int pass = int(bx % passes);
  const int g = int((bx / passes) % n_kv_heads);
  const int64_t i = bx / passes / n_kv_heads;
  const int group = n_heads / n_kv_heads;
  const int h0 = g * group + pass * kHeadsPerPass;
  const int hp = min(kHeadsPerPass, group - pass * kHeadsPerPass);
  const int64_t split = blockIdx.y;
  const int64_t lo = split * keys_per_split;
  const int64_t hi = min(lo + keys_per_split, past + i + 1);  // exclusive; may be <= lo
  const int64_t kv_stride = int64_t(n_kv_heads) * HD;

  float qr[kHeadsPerPass][E], acc[kHeadsPerPass][E], m[kHeadsPerPass], l[kHeadsPerPass];
#pragma unroll
  for (int x = 0; x < kHeadsPerPass; ++x) {
    m[x] = -INFINITY;
    l[x] = 0.0f;
#pragma unroll
    for (int e = 0; e < E; ++e) {
      qr[x][e] = 0.0f;
      acc[x][e] = 0.0f;
    }
    if (x < hp) load_row<E>(q + (i * n_heads + h0 + x) * HD + lane * E, qr[x]);
  }

  for (int64_t j = lo + warp; j < hi; j += kWarps) {
    float kr[E], vr[E];
    load_row<E>(k + j * kv_stride + int64_t(g) * HD + lane * E, kr);
    load_row<E>(v + j * kv_stride + int64_t(g) * HD + lane * E, vr);
#pragma unroll
    for (int x = 0; x < kHeadsPerPass; ++x) {
      if (x >= hp) continue;  // uniform over the block: the butterfly below stays converged
      float s = 0.0f;
#pragma unroll
      for (int e = 0; e < E; ++e) s = fmaf(qr[x][e], kr[e], s);
      s = warp_sum(s) * scale;
      const float m_new = fmaxf(m[x], s);
      const float corr = expf(m[x] - m_new);  // 0 on the first key (m = -inf)
      const float p = expf(s - m_new);
      l[x] = l[x] * corr + p;
#pragma unroll
      for (int e = 0; e < E; ++e) acc[x][e] = fmaf(acc[x][e], corr, p * vr[e]);
      m[x] = m_new;
    }
  }

#pragma unroll
  for (int x = 0; x < kHeadsPerPass; ++x) {
    if (x >= hp) continue;
#pragma unroll
    for (int e = 0; e < E; ++e) sAcc[warp][x][lane * E + e] = acc[x][e];
    if (lane == 0) {
      sM[warp][x] = m[x];
      sL[warp][x] = l[x];
    }
  }
  __syncthreads();

  const bool direct = gridDim.y == 1;
  const int64_t rows = n * n_heads;
  for (int t = threadIdx.x; t < hp * HD; t += kThreads) {
    const int x = t / HD, d = t % HD;
    float mx = -INFINITY;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) mx = fmaxf(mx, sM[w][x]);
    float sum = 0.0f, a = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      if (sM[w][x] == -INFINITY) continue;  // a warp that saw no key
      const float c = expf(sM[w][x] - mx);
      sum = fmaf(sL[w][x], c, sum);
      a = fmaf(sAcc[w][x][d], c, a);
    }
    const int64_t row = i * n_heads + h0 + x;
    if (direct) {
      out[row * HD + d] = __float2bfloat16_rn(a / sum);  // key 0 is always seen: sum > 0
    } else {
      const int64_t prow = split * rows + row;
      part_acc[prow * HD + d] = a;
      if (d == 0) {
        part_ml[prow * 2] = mx;
        part_ml[prow * 2 + 1] = sum;
      }
    }
  }
}

// Grid (n * H), HD threads: merges the `splits` partials of one (query, head) row.
template <int HD>
__global__ void __launch_bounds__(HD)
    attention_cached_combine_kernel(bf16* __restrict__ out, const float* __restrict__ part_acc,
                                    const float* __restrict__ part_ml, int64_t rows,
                                    int64_t splits) {
  const int64_t row = blockIdx.x;
  const int d = threadIdx.x;
  float mx = -INFINITY;
  for (int64_t s = 0; s < splits; ++s) mx = fmaxf(mx, part_ml[(s * rows + row) * 2]);
  float sum = 0.0f, a = 0.0f;
  for (int64_t s = 0; s < splits; ++s) {
    const int64_t prow = s * rows + row;
    const float ms = part_ml[prow * 2];
    if (ms == -INFINITY) continue;  // a chunk past this query's last key
    const float c = expf(ms - mx);
    sum = fmaf(part_ml[prow * 2 + 1], c, sum);
    a = fmaf(part_acc[prow * HD + d], c, a);
  }
  out[row * HD + d] = __float2bfloat16_rn(a / sum);
}

// The launch sequence of attention_forward_cached (past > 0 or a single query) after its
// argument checks, through `launch(name, kernel, grid, block, smem, args...)`. scratch: the
// plan's workspace (attention_forward_cached_workspace_bytes), unused with one split.
template <int HD, typename Launcher>
void run_cached_hd(const Launcher& launch, bf16* out, const bf16* q, const bf16* k, const bf16* v,
                   int64_t n, int64_t past, int n_heads, int n_kv_heads, const CachedPlan& plan,
                   float* scratch) {
  const float scale = 1.0f / std::sqrt(float(HD));
  const int64_t rows = n * n_heads;
  float* part_acc = plan.splits > 1 ? scratch : nullptr;
  float* part_ml = plan.splits > 1 ? scratch + plan.splits * rows * HD : nullptr;
  const dim3 grid(unsigned(n * n_kv_heads * plan.passes), unsigned(plan.splits));
  launch("attention_cached_partial_kernel", attention_cached_partial_kernel<HD>, grid,
         dim3(kThreads), size_t(0), out, part_acc, part_ml, q, k, v, n, past, n_heads, n_kv_heads,
         int(plan.passes), plan.keys_per_split, scale);
  if (plan.splits == 1) return;
  launch("attention_cached_combine_kernel", attention_cached_combine_kernel<HD>,
         dim3(unsigned(rows)), dim3(HD), size_t(0), out, part_acc, part_ml, rows, plan.splits);
}

template <typename Launcher>
void run_cached(const Launcher& launch, bf16* out, const bf16* q, const bf16* k, const bf16* v,
                int64_t n, int64_t past, int n_heads, int n_kv_heads, int64_t head_dim,
                const CachedPlan& plan, float* scratch) {
  if (head_dim == 32)
    run_cached_hd<32>(launch, out, q, k, v, n, past, n_heads, n_kv_heads, plan, scratch);
  else if (head_dim == 64)
    run_cached_hd<64>(launch, out, q, k, v, n, past, n_heads, n_kv_heads, plan, scratch);
  else
    run_cached_hd<128>(launch, out, q, k, v, n, past, n_heads, n_kv_heads, plan, scratch);
}

}  // namespace ll::cuda::cached_dev
