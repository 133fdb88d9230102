#pragma once
// Helpers shared by the Hopper attention kernels (attention_tc_forward_sm90.cuh,
// attention_tc_backward_sm90.cuh; internal): the panel layout of their shared tiles, the
// epilogue that stores a warp's accumulator rows, and their tensor maps.
//
// Panel layout: a [kRows, HD] bf16 tile is HD / 64 panels of [kRows, 64] (rows of 128 bytes,
// one swizzle atom wide), 16-byte chunk c of row r stored at chunk c ^ (r % 8): what a bulk
// tensor copy with CU_TENSOR_MAP_SWIZZLE_128B writes to a 1024-byte-aligned address and what
// wgmma reads through a descriptor with swizzle mode 1.
// Accumulator layout (wgmma m64nN, f32): thread lane = 4 g + q4 of warp w in its warpgroup
// holds rows 16 w + g (i % 4 < 2) and 16 w + g + 8 of element i, column 8 (i / 4) + 2 q4 + i % 2.
#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>

#include "kernels/cuda/attention_tc_common.cuh"
#include "kernels/cuda/dynamic_smem.cuh"
#include "kernels/cuda/tc_ptx.cuh"
#include "kernels/cuda/tc_ptx_sm90.cuh"

namespace ll::cuda::tc::sm90 {

using bf16 = __nv_bfloat16;

constexpr int kPanelRowBytes = 128;

constexpr int kBlockWarps = 8;  // every Hopper attention kernel: 2 warpgroups

// The block's dynamic shared memory rounded up to 1024 bytes (the 128-byte swizzle's atom; the
// launch asks for 1024 bytes of slack): its shared address, and the generic pointer in `base`.
__device__ __forceinline__ uint32_t aligned_smem(unsigned char*& base) {
  unsigned char* const raw = dynamic_smem();
  const uint32_t raw_addr = uint32_t(__cvta_generic_to_shared(raw));
  const uint32_t addr = (raw_addr + 1023u) & ~1023u;
  base = raw + (addr - raw_addr);
  return addr;
}

// Thread 0 initializes `count` consecutive mbarriers from shared address `first` (arrival
// count 1: thread 0's arrive.expect_tx); a __syncthreads must follow before any use.
__device__ __forceinline__ void init_mbarriers(int tid, uint32_t first, int count) {
  if (tid != 0) return;
  for (int b = 0; b < count; ++b) mbar_init(first + 8u * uint32_t(b), 1);
  fence_mbar_init();
}

// A warp's visible-range statistics over its valid rows: f_min, l_max bound what any row
// sees, f_max, l_min what every row sees (an empty warp: f_min > l_max).
struct WarpRanges {
  int f_min = INT_MAX, f_max = INT_MIN, l_min = INT_MAX, l_max = INT_MIN;
};

// The visible ranges [first[hf], last[hf]] of this thread's rows at positions pos0 and
// pos0 + 8 (range_of(position) gives a KeyRange or QueryRange; positions at or past n get the
// empty range [1, 0]) and its warp's statistics (a warp collective).
template <typename RangeOf>
__device__ __forceinline__ WarpRanges thread_row_ranges(RangeOf range_of, int pos0, int n,
                                                        int (&first)[2], int (&last)[2]) {
  WarpRanges r;
#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    const int i = pos0 + 8 * hf;
    if (i < n) {
      const auto kr = range_of(i);
      first[hf] = int(kr.first);
      last[hf] = int(kr.last);
      r.f_min = min(r.f_min, first[hf]);
      r.f_max = max(r.f_max, first[hf]);
      r.l_min = min(r.l_min, last[hf]);
      r.l_max = max(r.l_max, last[hf]);
    } else {
      first[hf] = 1;
      last[hf] = 0;
    }
  }
  warp_ranges(r.f_min, r.f_max, r.l_min, r.l_max);
  return r;
}

// Lane 0 of each warp publishes [first visit, last visit] of its rows; after a __syncthreads,
// block_ranges gives the union over the block [lo, hi] and over warpgroup wg [wg_lo, wg_hi].
__device__ __forceinline__ void publish_ranges(int (&s_range)[kBlockWarps][2], int warp, int lane,
                                               const WarpRanges& r) {
  if (lane == 0) {
    s_range[warp][0] = r.f_min;
    s_range[warp][1] = r.l_max;
  }
}
__device__ __forceinline__ void block_ranges(const int (&s_range)[kBlockWarps][2], int wg, int& lo,
                                             int& hi, int& wg_lo, int& wg_hi) {
  lo = wg_lo = INT_MAX;
  hi = wg_hi = INT_MIN;
#pragma unroll
  for (int w = 0; w < kBlockWarps; ++w) {
    lo = min(lo, s_range[w][0]);
    hi = max(hi, s_range[w][1]);
    if (w / 4 == wg) {
      wg_lo = min(wg_lo, s_range[w][0]);
      wg_hi = max(wg_hi, s_range[w][1]);
    }
  }
}

// Byte offset of 16-byte chunk `chunk` (0 .. HD / 8) of row `row` in a [kRows, HD] panel tile.
template <int kRows>
__host__ __device__ constexpr int panel_offset(int row, int chunk) {
  return (chunk >> 3) * kRows * kPanelRowBytes + row * kPanelRowBytes +
         (((chunk & 7) ^ (row & 7)) << 4);
}

// A warp's 16 rows of HD-wide accumulators (one [64 x 64] wgmma accumulator per panel: acc[p]
// holds columns 64 p ..) times mul[0] (rows g) / mul[1] (rows g + 8), as bf16 into rows
// [row0, row0 + 16) of the panel tile at `tile` ([kRows, HD]); then 16-byte stores of the rows
// with p0 + row < n to dst + (p0 + row) * stride. The warp must own those tile rows (no other
// warp reads or writes them meanwhile).
template <int HD, int kRows>
__device__ __forceinline__ void store_acc_rows(unsigned char* tile, const float (&acc)[HD / 64][32],
                                               const float (&mul)[2], int lane, int row0, int p0,
                                               int n, bf16* dst, int64_t stride) {
  const int g = lane >> 2, q4 = lane & 3;
#pragma unroll
  for (int hf = 0; hf < 2; ++hf) {
    const int row = row0 + g + 8 * hf;
#pragma unroll
    for (int p = 0; p < HD / 64; ++p)
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const uint32_t packed =
            pack_bf16(acc[p][4 * j + 2 * hf] * mul[hf], acc[p][4 * j + 2 * hf + 1] * mul[hf]);
        *reinterpret_cast<uint32_t*>(tile + panel_offset<kRows>(row, 8 * p + j) + 4 * q4) = packed;
      }
  }
  __syncwarp();
  constexpr int kChunks = HD / 8;
  static_assert((16 * kChunks) % 32 == 0, "whole warp passes");
#pragma unroll
  for (int c0 = 0; c0 < 16 * kChunks; c0 += 32) {
    const int c = c0 + lane;
    const int row = row0 + c / kChunks, ch = c % kChunks;
    const int i = p0 + row;
    if (i < n) {
      const uint4 val = *reinterpret_cast<const uint4*>(tile + panel_offset<kRows>(row, ch));
      *reinterpret_cast<uint4*>(dst + int64_t(i) * stride + ch * 8) = val;
    }
  }
}

// The tensor map of a [n, heads, head_dim] bf16 tensor as (head_dim, heads, n) with boxes of
// (64, 1, box_rows): one head's rows of one 64-wide panel, 128-byte swizzle, zero fill outside.
// `encode` has cuTensorMapEncodeTiled's signature. Returns false when it refuses.
template <typename Encode>
bool make_head_map(Encode encode, CUtensorMap& map, const bf16* base, int n, int heads,
                   int head_dim, int box_rows) {
  const cuuint64_t dims[3] = {cuuint64_t(head_dim), cuuint64_t(heads), cuuint64_t(n)};
  const cuuint64_t strides[2] = {cuuint64_t(head_dim) * 2, cuuint64_t(heads) * head_dim * 2};
  const cuuint32_t box[3] = {64, 1, cuuint32_t(box_rows)};
  const cuuint32_t elem[3] = {1, 1, 1};
  return encode(&map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 3, const_cast<bf16*>(base), dims, strides,
                box, elem, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

}  // namespace ll::cuda::tc::sm90
