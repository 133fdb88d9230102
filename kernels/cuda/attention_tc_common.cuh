#pragma once
// Device helpers shared by the tensor-core attention kernels (internal; device code only):
// swizzled shared-memory addressing, the block's key-visit range and the cp.async tile loaders;
// used by the mma.sync kernels (attention_tc_forward_kernels.cuh and
// attention_tc_backward_kernels.cuh). The PTX primitives they build on are in tc_ptx.cuh.
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

// One (shared tile, global source) pair of load_tile_rows.
struct TileCopy {
  uint32_t smem;             // shared address of the swizzled tile
  const __nv_bfloat16* src;  // global base: row r's chunk is at src + off (off of row_off)
};

// Rows [0, kRows) of swizzled bf16 tiles from global memory: this thread copies 16-byte chunk
// copy_chunk of rows r = copy_row + p * kRowsPerPass from src + off to smem + swz(r, copy_chunk)
// of each pair, where ok = row_off(r, off) (off 0 when !ok); rows with !ok are zero-filled.
template <int kRows, int kRowsPerPass, int kRowBytes, typename RowOff, typename... Copies>
__device__ __forceinline__ void load_tile_rows(int copy_row, int copy_chunk, RowOff row_off,
                                               Copies... copies) {
#pragma unroll
  for (int p = 0; p < kRows / kRowsPerPass; ++p) {
    const int r = copy_row + p * kRowsPerPass;
    int64_t off;
    const bool ok = row_off(r, off);
    const uint32_t dst = swz<kRowBytes>(r, copy_chunk);
    (cp_async_16(copies.smem + dst, copies.src + off, ok), ...);
  }
}

// row_off of load_tile_rows for rows row0 + r of a row-major [n, stride] tensor (rows past n
// missing), at column head_off + 8 * copy_chunk (src then points at the tensor itself).
__device__ __forceinline__ auto clipped_rows(int row0, int n, int64_t stride, int64_t head_off,
                                             int copy_chunk) {
  return [=](int r, int64_t& off) {
    const int j = row0 + r;
    const bool ok = j < n;
    off = ok ? int64_t(j) * stride + head_off + copy_chunk * 8 : 0;
    return ok;
  };
}

// row_off of load_tile_rows for visit indices v0 + r (missing past v_hi): visit vis is row
// vis + shift, less n past the end (the S2Roll wrap; shift is 0 otherwise), of stride `stride`.
__device__ __forceinline__ auto wrapped_rows(int v0, int v_hi, int64_t shift, int64_t n,
                                             int64_t stride) {
  return [=](int r, int64_t& off) {
    const int vis = v0 + r;
    const bool ok = vis <= v_hi;
    int64_t pos = int64_t(vis) + shift;
    if (pos >= n) pos -= n;
    off = ok ? pos * stride : 0;
    return ok;
  };
}

// K and V rows of one kv head for visit indices [v0, v0 + kRows) into the swizzled tiles at
// shared addresses s_k and s_v (load_tile_rows with wrapped_rows; k_head and v_head already
// point at this thread's chunk of key 0); visits past v_hi are zero-filled and never read.
template <int kRows, int kRowsPerPass, int kRowBytes>
__device__ __forceinline__ void load_kv_tile(uint32_t s_k, uint32_t s_v,
                                             const __nv_bfloat16* k_head,
                                             const __nv_bfloat16* v_head, int v0, int v_hi,
                                             int64_t kv_shift, int64_t n, int64_t kv_stride,
                                             int copy_row, int copy_chunk) {
  load_tile_rows<kRows, kRowsPerPass, kRowBytes>(copy_row, copy_chunk,
                                                 wrapped_rows(v0, v_hi, kv_shift, n, kv_stride),
                                                 TileCopy{s_k, k_head}, TileCopy{s_v, v_head});
}

}  // namespace ll::cuda::tc
