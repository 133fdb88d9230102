#pragma once
// Cross-entropy kernel over one chunk of fp32 logits (see cross_entropy.cuh) and its host
// launch sequence. Internal: included by cross_entropy.cu (nvcc) and by the SIMT emulator
// tests (tests/kernels/cuda/emu), which run the same kernel and sequence.
//
// One block of 1024 threads per row (grid-stride over rows): a statistics pass (online max /
// sum of exp per thread, fixed-order block reductions: deterministic), then a gradient pass
// that overwrites the row's fp32 logits with its bf16 gradient in place (see the comment above
// the kernel for why that is race-free).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cfloat>
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "kernels/cuda/bf16_vector_device.cuh"
#include "kernels/cuda/cross_entropy.cuh"

namespace ll::cuda::cross_entropy_dev {

using detail::bf16;
using detail::block_sum;

// One row per 1024-thread block: at most two blocks per SM, so about 2 x SMs rows are in
// flight, and their fp32 rows (128 KB each at V = 32000: ~34 MB on an H100) can stay in L2
// between the statistics pass and the gradient pass that reads them again.
constexpr int kThreads = 1024;
// Vectors per thread per tile of the gradient pass (and per step of the statistics pass).
constexpr int kPerThread = 2;
// Blocks at most; the kernel strides over the rest of the rows.
constexpr int64_t kMaxBlocks = int64_t(1) << 16;

// Max over the block, every thread gets it (fixed order, so deterministic). red: __shared__
// [32]. Ends with a barrier so red can be reused right away. NaN is dropped by fmaxf; the
// caller detects non-finite logits separately.
__device__ __forceinline__ float block_max(float v, float* red) {
  constexpr int kWarps = kThreads / 32;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
  if (lane == 0) red[warp] = v;
  __syncthreads();
  float t = lane < kWarps ? red[lane] : -INFINITY;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) t = fmaxf(t, __shfl_xor_sync(0xffffffffu, t, o));
  __syncthreads();
  return t;
}

// VW consecutive fp32 logits (VW == 4 needs p 16-byte aligned).
template <int VW>
__device__ __forceinline__ void load_f32(const float* p, float (&f)[VW]) {
  if constexpr (VW == 4) {
    const float4 v = *reinterpret_cast<const float4*>(p);
    f[0] = v.x;
    f[1] = v.y;
    f[2] = v.z;
    f[3] = v.w;
  } else {
#pragma unroll
    for (int k = 0; k < VW; ++k) f[k] = p[k];
  }
}

// VW values rounded to bf16 (VW == 4 needs p 8-byte aligned).
template <int VW>
__device__ __forceinline__ void store_bf16v(bf16* p, const float (&f)[VW]) {
  if constexpr (VW == 4) {
    uint2 raw;
    __nv_bfloat162* h = reinterpret_cast<__nv_bfloat162*>(&raw);
    h[0] = __floats2bfloat162_rn(f[0], f[1]);
    h[1] = __floats2bfloat162_rn(f[2], f[3]);
    *reinterpret_cast<uint2*>(p) = raw;
  } else {
#pragma unroll
    for (int k = 0; k < VW; ++k) p[k] = __float2bfloat16_rn(f[k]);
  }
}

// Online max / sum of exp: after all of a thread's values, s = sum exp(x - m), m = their max.
// One expf per value: exp(-|x - m|) is either the new term (x <= m) or the factor that
// rescales the old sum (x > m). m starts at -inf, s at 0: the first value gives s = 1.
__device__ __forceinline__ void online_add(float x, float& m, float& s) {
  const float d = x - m;
  const float e = expf(-fabsf(d));
  const bool bigger = d > 0.0f;
  s = bigger ? fmaf(s, e, 1.0f) : s + e;
  m = bigger ? x : m;
}

// Rows grid-strided over blocks; VW fp32 logits per vector access (4 when the rows are
// 16-byte aligned, else 1); vocab % VW == 0.
//
// In-place gradient. The bf16 gradient element j of a row lands on bytes [2j, 2j + 2) of the
// row's storage, which belong to fp32 element j / 2 of the same row. The gradient pass walks
// the row in tiles of kTile = kThreads * kPerThread * VW elements: every thread first reads its
// elements of the tile [t0, t0 + kTile) into registers, then __syncthreads(), then writes their
// bf16 gradients. The writes of tile i cover fp32 elements [t0 / 2, (t0 + kTile) / 2): all
// below the tile's end, so read either in this tile (before the barrier every writer has
// passed) or in an earlier tile (before an earlier barrier). The reads of a later tile start at
// t0 + kTile, above every byte written so far, so no second barrier is needed before them, and
// no address is ever read after it was written (read-only caching would be safe too). The
// statistics pass (max, sum, row[target]) must also be complete before the first write: its
// block reductions end with barriers, so it is.
template <int VW>
__global__ void __launch_bounds__(kThreads)
    cross_entropy_kernel(float* losses, float* logits, const int32_t* targets, int64_t rows,
                         int vocab, float loss_scale, bool write_grad, int* status) {
  __shared__ float red[32];
  const int n_vec = vocab / VW;                    // vectors per row
  constexpr int kTileVec = kThreads * kPerThread;  // vectors per tile
  const int tid = int(threadIdx.x);
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    float* row = logits + r * int64_t(vocab);   // [V] fp32 in, then [V] bf16 out
    bf16* grad = reinterpret_cast<bf16*>(row);  // [V] bf16, over the row's first 2V bytes
    const int32_t raw_target = targets[r];      // the same in every thread: uniform branches
    const bool bad_target = raw_target >= vocab;
    const int target = bad_target ? -1 : int(raw_target);
    if (target < 0) {
      if (tid == 0) {
        losses[r] = 0.0f;
        if (bad_target && status != nullptr) atomicOr(status, kCrossEntropyBadTarget);
      }
      if (write_grad) {  // no reads of this row: zeros can go anywhere in any order
        const float zero[VW] = {};
        for (int i = tid; i < n_vec; i += kThreads) store_bf16v<VW>(grad + i * VW, zero);
      }
      continue;
    }

    // Statistics pass: per-thread online max / sum, then fixed-order block reductions.
    const float x_target = tid == 0 ? row[target] : 0.0f;  // read before any write
    float m = -INFINITY, s = 0.0f;
    bool finite = true;
    for (int t0 = 0; t0 < n_vec; t0 += kTileVec) {
      float v[kPerThread][VW];
#pragma unroll
      for (int e = 0; e < kPerThread; ++e) {
        const int i = t0 + e * kThreads + tid;
        if (i < n_vec) load_f32<VW>(row + i * VW, v[e]);
      }
#pragma unroll
      for (int e = 0; e < kPerThread; ++e) {
        if (t0 + e * kThreads + tid < n_vec) {
#pragma unroll
          for (int k = 0; k < VW; ++k) {
            finite = finite && fabsf(v[e][k]) <= FLT_MAX;
            online_add(v[e][k], m, s);
          }
        }
      }
    }
    const bool row_finite = __syncthreads_and(finite) != 0;
    const float row_max = block_max(m, red);
    // exp(m - row_max) is 0 for a thread without values (m = -inf, s = 0).
    const float sum = block_sum<kThreads>(s * expf(m - row_max), red);
    // Ends with a barrier: every read of the statistics pass is done.

    if (tid == 0) {
      // (max - x_target) is exact when they are close (Sterbenz), as for a large offset.
      const float loss = row_finite ? (row_max - x_target) + logf(sum) : NAN;
      losses[r] = loss;
      if (!isfinite(loss) && status != nullptr) atomicOr(status, kCrossEntropyNonFinite);
    }
    if (!write_grad) continue;

    // Gradient pass, tile by tile (see the comment above the kernel).
    const float inv_sum = row_finite ? 1.0f / sum : NAN;
    for (int t0 = 0; t0 < n_vec; t0 += kTileVec) {
      float v[kPerThread][VW];
#pragma unroll
      for (int e = 0; e < kPerThread; ++e) {
        const int i = t0 + e * kThreads + tid;
        if (i < n_vec) load_f32<VW>(row + i * VW, v[e]);
      }
      __syncthreads();  // every fp32 read of this tile before any bf16 write into it
#pragma unroll
      for (int e = 0; e < kPerThread; ++e) {
        const int i = t0 + e * kThreads + tid;
        if (i < n_vec) {
#pragma unroll
          for (int k = 0; k < VW; ++k) {
            float p = expf(v[e][k] - row_max) * inv_sum;
            if (i * VW + k == target) p -= 1.0f;
            v[e][k] = p * loss_scale;
          }
          store_bf16v<VW>(grad + i * VW, v[e]);
        }
      }
    }
  }
}

// losses: [rows], logits: [rows, vocab] (bf16 gradient in place when write_grad), targets:
// [rows]; rows >= 1, 1 <= vocab <= INT_MAX / 4. One launch.
template <typename Launcher>
void run_cross_entropy_chunk(const Launcher& launch, float* losses, float* logits,
                             const int32_t* targets, int64_t rows, int vocab, float loss_scale,
                             bool write_grad, int* status) {
  const unsigned blocks = unsigned(rows < kMaxBlocks ? rows : kMaxBlocks);
  if (vocab % 4 == 0 && host_detail::aligned16(logits)) {
    launch("cross_entropy_kernel", cross_entropy_kernel<4>, dim3(blocks), dim3(kThreads), size_t(0),
           losses, logits, targets, rows, vocab, loss_scale, write_grad, status);
  } else {
    launch("cross_entropy_kernel", cross_entropy_kernel<1>, dim3(blocks), dim3(kThreads), size_t(0),
           losses, logits, targets, rows, vocab, loss_scale, write_grad, status);
  }
}

}  // namespace ll::cuda::cross_entropy_dev
