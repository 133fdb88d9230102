#pragma once
// The Hopper (sm_90a) PTX primitives of the wgmma attention kernels (internal; device code
// only): mbarrier, the bulk tensor copy (TMA), wgmma and its fences. nvcc compiles them as inline
// PTX, usable only in code compiled for sm_90a (the kernels guard their bodies with
// LL_SM90A_DEVICE_CODE). Under the SIMT emulator (LL_SIMT_EMULATOR_DEVICE_CODE) they call the
// emulator, which implements each instruction from the PTX ISA (tests/cuda_emu/simt_emulator.h);
// the asm operand lists below only a GPU run proves.
#include <cuda.h>  // CUtensorMap
#include <cuda_runtime.h>

#include <cstdint>

#if defined(LL_SIMT_EMULATOR_DEVICE_CODE)
#include "tests/cuda_emu/simt_emulator.h"
#endif

#include "kernels/cuda/sm90a_device_code.h"  // LL_SM90A_DEVICE_CODE

namespace ll::cuda::tc::sm90 {

// Shared-memory matrix descriptor of a wgmma operand with the 128-byte swizzle (PTX ISA
// "matrix descriptor"): start address, leading and stride byte offsets (>> 4 each), swizzle
// mode 1 in bits 62-63, base offset 0 (every 8-row atom starts 1024-byte aligned).
__host__ __device__ constexpr uint64_t smem_desc_sw128(uint32_t addr, uint32_t lbo, uint32_t sbo) {
  return uint64_t((addr & 0x3ffffu) >> 4) | (uint64_t((lbo & 0x3ffffu) >> 4) << 16) |
         (uint64_t((sbo & 0x3ffffu) >> 4) << 32) | (uint64_t(1) << 62);
}

#if !defined(LL_SIMT_EMULATOR_DEVICE_CODE)

__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
// Makes the barriers' initialization visible to the bulk copy engine (before the block barrier
// that publishes them).
__device__ __forceinline__ void fence_mbar_init() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}
__device__ __forceinline__ void mbar_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes)
               : "memory");
}
// Returns once the phase of parity `parity` has completed.
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
  asm volatile(
      "{\n.reg .pred done;\nwait_%=:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra wait_%=;\n}\n" ::"r"(bar),
      "r"(parity)
      : "memory");
}
// Makes this thread's generic-proxy writes to shared memory visible to the async proxy (the
// wgmma that reads them after the next barrier).
__device__ __forceinline__ void fence_proxy_async_smem() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
// Box of the 3-d tensor `map` at coordinates (c0, c1, c2) -> shared dst; completes on `bar`.
__device__ __forceinline__ void tma_load_3d(uint32_t dst, const CUtensorMap* map, int c0, int c1,
                                            int c2, uint32_t bar) {
  asm volatile(
      "cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, "
      "{%2, %3, %4}], [%5];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(bar)
      : "memory");
}

__device__ __forceinline__ void wgmma_fence() {
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Keeps the compiler from moving reads or writes of a wgmma accumulator across the asm
// statements around it (the accumulators change asynchronously between mma_async and wait).
__device__ __forceinline__ void fence_operand(float& x) { asm volatile("" : "+f"(x)::"memory"); }

// D[64 x 128] (+)= A[64 x 16] B[16 x 128]; A and B K-major in shared memory (descriptors).
__device__ __forceinline__ void wgmma_m64n128k16_ss(float (&d)[64], uint64_t desc_a,
                                                    uint64_t desc_b, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, "
      "%20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, "
      "%38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, "
      "%56, %57, %58, %59, %60, %61, %62, %63}, "
      "%64, %65, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
        "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),
        "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]),
        "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),
        "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]),
        "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]),
        "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]),
        "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]),
        "+f"(d[63])
      : "l"(desc_a), "l"(desc_b), "r"(scale_d));
}

// The 32 fp32 accumulators of an m64n64 wgmma: the asm output operands %0..%31 and their
// PTX vector.
#define LL_WGMMA_D32_OUTPUTS(d)                                                                   \
  "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), \
      "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]),    \
      "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]),  \
      "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]),  \
      "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
#define LL_WGMMA_D32_PTX                                                                        \
  "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, " \
  "%20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "

// D[64 x 64] (+)= A[64 x 16] B[16 x 64], both in shared memory (descriptors); A K-major, B
// K-major (kTransB 0) or N-major (kTransB 1).
template <int kTransB>
__device__ __forceinline__ void wgmma_m64n64k16_ss_b(float (&d)[32], uint64_t desc_a,
                                                     uint64_t desc_b, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " LL_WGMMA_D32_PTX
      "%32, %33, p, 1, 1, 0, %35;\n}\n"
      : LL_WGMMA_D32_OUTPUTS(d)
      : "l"(desc_a), "l"(desc_b), "r"(scale_d), "n"(kTransB));
}
__device__ __forceinline__ void wgmma_m64n64k16_ss(float (&d)[32], uint64_t desc_a, uint64_t desc_b,
                                                   int scale_d) {
  wgmma_m64n64k16_ss_b<0>(d, desc_a, desc_b, scale_d);
}
__device__ __forceinline__ void wgmma_m64n64k16_ss_nmajor(float (&d)[32], uint64_t desc_a,
                                                          uint64_t desc_b, int scale_d) {
  wgmma_m64n64k16_ss_b<1>(d, desc_a, desc_b, scale_d);
}

// D[64 x 64] (+)= A[64 x 16] B[16 x 64]; A in registers, B N-major in shared memory.
__device__ __forceinline__ void wgmma_m64n64k16_rs_nmajor(float (&d)[32], const uint32_t (&a)[4],
                                                          uint64_t desc_b, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " LL_WGMMA_D32_PTX
      "{%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n"
      : LL_WGMMA_D32_OUTPUTS(d)
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(scale_d));
}

#else  // LL_SIMT_EMULATOR_DEVICE_CODE

inline void mbar_init(uint32_t bar, uint32_t count) { emu::mbarrier_init(bar, count); }
inline void fence_mbar_init() {}
inline void mbar_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
  emu::mbarrier_arrive_expect_tx(bar, bytes);
}
inline void mbar_wait(uint32_t bar, uint32_t parity) { emu::mbarrier_wait_parity(bar, parity); }
inline void tma_load_3d(uint32_t dst, const CUtensorMap* map, int c0, int c1, int c2,
                        uint32_t bar) {
  const int32_t c[3] = {c0, c1, c2};
  emu::bulk_tensor_load(dst, map, 3, c, bar);
}
inline void fence_proxy_async_smem() {}  // the emulator's wgmma reads shared memory at wait
inline void wgmma_fence() { emu::wgmma_fence(); }
inline void wgmma_commit() { emu::wgmma_commit(); }
template <int N>
inline void wgmma_wait() {
  emu::wgmma_wait(N);
}
inline void fence_operand(float&) {}
inline void wgmma_m64n128k16_ss(float (&d)[64], uint64_t desc_a, uint64_t desc_b, int scale_d) {
  emu::wgmma_bf16(d, 128, desc_a, nullptr, desc_b, scale_d != 0, false);
}
inline void wgmma_m64n64k16_ss(float (&d)[32], uint64_t desc_a, uint64_t desc_b, int scale_d) {
  emu::wgmma_bf16(d, 64, desc_a, nullptr, desc_b, scale_d != 0, false);
}
inline void wgmma_m64n64k16_ss_nmajor(float (&d)[32], uint64_t desc_a, uint64_t desc_b,
                                      int scale_d) {
  emu::wgmma_bf16(d, 64, desc_a, nullptr, desc_b, scale_d != 0, true);
}
inline void wgmma_m64n64k16_rs_nmajor(float (&d)[32], const uint32_t (&a)[4], uint64_t desc_b,
                                      int scale_d) {
  emu::wgmma_bf16(d, 64, 0, a, desc_b, scale_d != 0, true);
}

#endif  // LL_SIMT_EMULATOR_DEVICE_CODE

}  // namespace ll::cuda::tc::sm90
