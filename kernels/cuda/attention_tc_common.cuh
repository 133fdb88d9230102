#pragma once
// Device helpers shared by the tensor-core attention kernels (internal; CUDA translation units
// only): swizzled shared-memory addressing, cp.async, ldmatrix, mma.sync m16n8k16 bf16 -> fp32,
// bf16x2 packing, the block's key-visit range and the K/V tile loader; used by the forward
// (attention_tc.cu) and the dQ pass of the backward (attention_tc_bwd.cu).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>

namespace ll::cuda::tc {

// Byte offset of 16-byte chunk `chunk` of row `row` in a swizzled [rows, HD] bf16 tile: chunk c
// of row r is stored at chunk c ^ (r & 7), so the 8 rows of an ldmatrix phase hit 8 bank groups.
template <int kRowBytes>
__device__ __forceinline__ uint32_t swz(int row, int chunk) {
  return uint32_t(row * kRowBytes + ((chunk ^ (row & 7)) << 4));
}

// 16-byte global -> shared copy; valid == false writes 16 zero bytes and reads nothing.
__device__ __forceinline__ void cp_async_16(uint32_t dst, const void* src, bool valid) {
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
               "r"(src_bytes)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}
// Waits until at most N of this thread's committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}
__device__ __forceinline__ void ldsm_x4_trans(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}

// d += a * b for one m16n8k16 tile (A row-major 16x16, B column-major 16x8, fp32 C/D).
__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
      "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two floats as bf16x2 (round to nearest even), lo in the low half (the lower column).
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  uint32_t r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
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
