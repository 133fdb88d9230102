#pragma once
// Device helpers shared by the tensor-core attention kernels (internal; device code only):
// swizzled shared-memory addressing, the block's key-visit range and the K/V tile loader; used
// by the forward (attention_tc.cuh) and the dQ pass of the backward
// (attention_tc_backward.cuh). The PTX primitives they build on are in tc_ptx.cuh.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>

#include "kernels/cuda/tc_ptx.cuh"

namespace ll::cuda::tc {

// Byte offset of 16-byte chunk `chunk` of row `row` in a swizzled [rows, HD] bf16 tile: chunk c
// of row r is stored at chunk c ^ (r & 7), so the 8 rows of an ldmatrix phase hit 8 bank groups.
template <int kRowBytes>
__device__ __forceinline__ uint32_t swz(int row, int chunk) {
  return uint32_t(row * kRowBytes + ((chunk ^ (row & 7)) << 4));
}

// Warp-wide reduction of per-row ranges over the 8 row groups (the 4 lanes of a quad hold the
// same rows): f_min, l_max bound what any row sees, f_max, l_min what every row sees.
__device__ __forceinline__ void warp_ranges(int& f_min, int& f_max, int& l_min, int& l_max) {
#pragma unroll
  for (int o = 4; o < 32; o <<= 1) {
    f_min = min(f_min, __shfl_xor_sync(0xffffffffu, f_min, o));
    f_max = max(f_max, __shfl_xor_sync(0xffffffffu, f_max, o));
    l_min = min(l_min, __shfl_xor_sync(0xffffffffu, l_min, o));
    l_max = max(l_max, __shfl_xor_sync(0xffffffffu, l_max, o));
  }
}

// The union [lo, hi] of the visit ranges the block's warps wrote to s_range[w] = {first visit,
// last visit} (read after __syncthreads). A block with a valid row has a non-empty union.
template <int kWarps>
__device__ __forceinline__ void block_visit_union(const int (&s_range)[kWarps][2], int& lo,
                                                  int& hi) {
  lo = INT_MAX;
  hi = INT_MIN;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) {
    lo = min(lo, s_range[w][0]);
    hi = max(hi, s_range[w][1]);
  }
}

// K and V rows of one kv head for visit indices [v0, v0 + kRows) into the swizzled tiles at
// shared addresses s_k and s_v: this thread copies 16-byte chunk copy_chunk of rows
// copy_row + p * kRowsPerPass (k_head and v_head already point at that chunk of key 0). Visit
// index vis is key position vis + kv_shift, less n past the end (the S2Roll wrap; kv_shift is 0
// otherwise); visits past v_hi are zero-filled by cp.async and never read.
template <int kRows, int kRowsPerPass, int kRowBytes>
__device__ __forceinline__ void load_kv_tile(uint32_t s_k, uint32_t s_v,
                                             const __nv_bfloat16* k_head,
                                             const __nv_bfloat16* v_head, int v0, int v_hi,
                                             int64_t kv_shift, int64_t n, int64_t kv_stride,
                                             int copy_row, int copy_chunk) {
#pragma unroll
  for (int p = 0; p < kRows / kRowsPerPass; ++p) {
    const int r = copy_row + p * kRowsPerPass;
    const int vis = v0 + r;
    const bool ok = vis <= v_hi;
    int64_t pos = int64_t(vis) + kv_shift;
    if (pos >= n) pos -= n;
    const int64_t off = ok ? pos * kv_stride : 0;
    const uint32_t dst = swz<kRowBytes>(r, copy_chunk);
    cp_async_16(s_k + dst, k_head + off, ok);
    cp_async_16(s_v + dst, v_head + off, ok);
  }
}

}  // namespace ll::cuda::tc
