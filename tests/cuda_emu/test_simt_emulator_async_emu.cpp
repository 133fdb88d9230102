// The SIMT emulator's Hopper operations (tests/cuda_emu/simt_emulator.h): bulk tensor copies
// with the 128-byte swizzle completing on an mbarrier, feeding wgmma with A and B from shared
// memory (K-major) and with A in registers and B N-major, compute real matrix products (the
// copy's swizzle, the descriptor layouts and the register fragments agree), elements outside
// the tensor are zero-filled; and every error it promises is reported: wgmma reads of copies
// no wait retired, copies over operands another warpgroup read since the last barrier, extra
// mbarrier arrivals, a swizzled copy to an unaligned destination, a wait that can never end,
// and tensor maps the driver would refuse.
#if defined(LL_HAVE_SIMT_EMULATOR)
#include "tests/cuda_emu/cuda_prelude.h"
#endif

#include <doctest/doctest.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "common/error.h"
#include "tests/error_text.h"

#if defined(LL_HAVE_SIMT_EMULATOR)
#include "kernels/cuda/dynamic_smem.cuh"
#include "kernels/cuda/tc_ptx.cuh"
#include "kernels/cuda/tc_ptx_sm90.cuh"

namespace {

namespace emu = ll::cuda::emu;
namespace sm90 = ll::cuda::tc::sm90;
using ll::cuda::dynamic_smem;

uint16_t bf16_of(int v) {  // small integers are exact in bf16
  const float f = float(v);
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return uint16_t(u >> 16);
}

// A rows x 64 bf16 matrix as a 3-d tensor map (64, 1, rows), box (64, 1, box_rows), swizzled.
CUtensorMap map_of(const uint16_t* base, int rows, int box_rows,
                   CUtensorMapSwizzle swizzle = CU_TENSOR_MAP_SWIZZLE_128B) {
  CUtensorMap m;
  const cuuint64_t dims[3] = {64, 1, cuuint64_t(rows)};
  const cuuint64_t strides[2] = {128, 128};
  const cuuint32_t box[3] = {64, 1, cuuint32_t(box_rows)}, elem[3] = {1, 1, 1};
  REQUIRE(emu::tensor_map_encode_tiled(
              &m, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 3, const_cast<uint16_t*>(base), dims, strides,
              box, elem, CU_TENSOR_MAP_INTERLEAVE_NONE, swizzle, CU_TENSOR_MAP_L2_PROMOTION_NONE,
              CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS);
  return m;
}

// One warpgroup. Shared: A [64 x 64] at 0, B [128 x 64] at 8192, V [64 x 64] at 24576, barrier
// at 32768. d1 [64 x 128] = A B^T (wgmma m64n128k16, both K-major from shared memory, 4 k16
// steps); d2 [64 x 64] = A V (A from registers as the fragment layout places it, V N-major).
// a_host: A [64 x 64] row-major, for the register fragments.
__global__ void wgmma_kernel(float* d1, float* d2, const uint16_t* a_host, const CUtensorMap ta,
                             const CUtensorMap tb, const CUtensorMap tv) {
  const int t = int(threadIdx.x), w = t / 32, g = (t % 32) / 4, q = t % 4;
  const uint32_t s = uint32_t(__cvta_generic_to_shared(dynamic_smem()));
  const uint32_t bar = s + 32768;
  if (t == 0) {
    sm90::mbar_init(bar, 1);
    sm90::fence_mbar_init();
  }
  __syncthreads();
  if (t == 0) {
    sm90::mbar_arrive_expect_tx(bar, 8192 + 16384 + 8192);
    sm90::tma_load_3d(s, &ta, 0, 0, 0, bar);
    sm90::tma_load_3d(s + 8192, &tb, 0, 0, 0, bar);
    sm90::tma_load_3d(s + 24576, &tv, 0, 0, 0, bar);
  }
  sm90::mbar_wait(bar, 0);
  float acc1[64], acc2[32];
  sm90::wgmma_fence();
  for (int ks = 0; ks < 4; ++ks)
    sm90::wgmma_m64n128k16_ss(acc1, sm90::smem_desc_sw128(s + 32 * ks, 16, 1024),
                              sm90::smem_desc_sw128(s + 8192 + 32 * ks, 16, 1024), ks > 0);
  for (int ks = 0; ks < 4; ++ks) {
    uint32_t a[4];
    const int rows[4] = {16 * w + g, 16 * w + g + 8, 16 * w + g, 16 * w + g + 8};
    const int cols[4] = {2 * q, 2 * q, 2 * q + 8, 2 * q + 8};
    for (int i = 0; i < 4; ++i) {
      const int e = rows[i] * 64 + 16 * ks + cols[i];
      a[i] = uint32_t(a_host[e]) | (uint32_t(a_host[e + 1]) << 16);
    }
    sm90::wgmma_m64n64k16_rs_nmajor(
        acc2, a, sm90::smem_desc_sw128(s + 24576 + 2048 * ks, 1024, 1024), ks > 0);
  }
  sm90::wgmma_commit();
  sm90::wgmma_wait<0>();
  for (int i = 0; i < 64; ++i) {
    const int row = 16 * w + g + 8 * ((i % 4) / 2), col = 8 * (i / 4) + 2 * q + (i % 2);
    d1[row * 128 + col] = acc1[i];
    if (i < 32) d2[row * 64 + col] = acc2[i];
  }
}

TEST_CASE("emulated bulk tensor copies + wgmma compute A B^T and A V; outside rows read zero") {
  std::vector<uint16_t> a(64 * 64), b(100 * 64), v(64 * 64);
  std::vector<int> ai(a.size()), bi(b.size()), vi(v.size());
  for (size_t i = 0; i < a.size(); ++i) a[i] = bf16_of(ai[i] = int(i * 7 % 11) - 5);
  for (size_t i = 0; i < b.size(); ++i) b[i] = bf16_of(bi[i] = int(i * 5 % 9) - 4);
  for (size_t i = 0; i < v.size(); ++i) v[i] = bf16_of(vi[i] = int(i * 3 % 7) - 3);
  // B has 100 rows, the box 128: rows 100..127 of the tile are zero-filled.
  const CUtensorMap ta = map_of(a.data(), 64, 64), tb = map_of(b.data(), 100, 128),
                    tv = map_of(v.data(), 64, 64);
  std::vector<float> d1(64 * 128, -1.0f), d2(64 * 64, -1.0f);
  emu::clear_globals();
  emu::register_global(a.data(), a.size() * 2);
  emu::register_global(b.data(), b.size() * 2);
  emu::register_global(v.data(), v.size() * 2);
  const emu::LaunchStats st = emu::launch("wgmma_kernel", wgmma_kernel, dim3(1), dim3(128),
                                          32768 + 8, d1.data(), d2.data(), a.data(), ta, tb, tv);
  emu::clear_globals();
  CHECK(st.wgmma == 8);
  CHECK(st.bulk_copy_bytes == 8192 + 16384 + 8192);
  int bad1 = 0, bad2 = 0;
  for (int r = 0; r < 64; ++r) {
    for (int c = 0; c < 128; ++c) {
      int ref = 0;
      for (int k = 0; k < 64; ++k)
        ref += c < 100 ? ai[size_t(r * 64 + k)] * bi[size_t(c * 64 + k)] : 0;
      bad1 += d1[size_t(r * 128 + c)] != float(ref);
    }
    for (int c = 0; c < 64; ++c) {
      int ref = 0;
      for (int k = 0; k < 64; ++k) ref += ai[size_t(r * 64 + k)] * vi[size_t(k * 64 + c)];
      bad2 += d2[size_t(r * 64 + c)] != float(ref);
    }
  }
  CHECK(bad1 == 0);
  CHECK(bad2 == 0);
}

// Error cases: `what` selects the mistake (two warpgroups; a 64-row tile at shared 0).
__global__ void faulty_async_kernel(int what, const CUtensorMap tm) {
  const int t = int(threadIdx.x);
  const uint32_t s = uint32_t(__cvta_generic_to_shared(dynamic_smem()));
  const uint32_t bar = s + 16384;
  if (t == 0) sm90::mbar_init(bar, 1);
  __syncthreads();
  float acc[64];
  const uint64_t desc = sm90::smem_desc_sw128(s, 16, 1024);
  switch (what) {
    case 0:  // wgmma reads the tile before anyone waited on its barrier
      if (t == 0) {
        sm90::mbar_arrive_expect_tx(bar, 8192);
        sm90::tma_load_3d(s, &tm, 0, 0, 0, bar);
      }
      __syncthreads();
      sm90::wgmma_fence();
      sm90::wgmma_m64n128k16_ss(acc, desc, desc, 0);
      sm90::wgmma_commit();
      sm90::wgmma_wait<0>();
      break;
    case 1:  // both warpgroups read the tile, thread 0 refills it with no barrier in between
      if (t == 0) {
        sm90::mbar_arrive_expect_tx(bar, 8192);
        sm90::tma_load_3d(s, &tm, 0, 0, 0, bar);
      }
      sm90::mbar_wait(bar, 0);
      sm90::wgmma_fence();
      sm90::wgmma_m64n128k16_ss(acc, desc, desc, 0);
      sm90::wgmma_commit();
      sm90::wgmma_wait<0>();
      if (t == 0) {
        sm90::mbar_arrive_expect_tx(bar, 8192);
        sm90::tma_load_3d(s, &tm, 0, 0, 0, bar);
      }
      break;
    case 2:  // two arrivals in one phase of a barrier of count 1 (bytes still expected)
      if (t == 0) {
        sm90::mbar_arrive_expect_tx(bar, 8192);
        sm90::mbar_arrive_expect_tx(bar, 8192);
      }
      break;
    case 3:  // a swizzled copy to a destination that is not 1024-byte aligned
      if (t == 0) {
        sm90::mbar_arrive_expect_tx(bar, 8192);
        sm90::tma_load_3d(s + 128, &tm, 0, 0, 0, bar);
      }
      break;
    case 4:  // a wait for a phase nobody completes
      sm90::mbar_wait(bar, 0);
      break;
  }
}

std::string async_fault_of(int what) {
  std::vector<uint16_t> g(64 * 64, 0);
  const CUtensorMap tm = map_of(g.data(), 64, 64);
  return ll::test::error_of([&] {
    emu::launch("faulty_async_kernel", faulty_async_kernel, dim3(1), dim3(256), 16384 + 8, what,
                tm);
  });
}

TEST_CASE("the emulator reports misuse of bulk copies, mbarriers and wgmma") {
  using ll::test::contains;
  CHECK(contains(async_fault_of(0), "while a copy to it is still in flight"));
  CHECK(contains(async_fault_of(1),
                 "overwrites shared byte 0 that warps 0xf0 read (wgmma) since "
                 "the last barrier"));
  CHECK(contains(async_fault_of(2), "more arrivals than its count 1"));
  CHECK(contains(async_fault_of(3), "is not 1024-byte aligned"));
  const std::string stall = async_fault_of(4);
  CHECK(contains(stall, "no thread can progress"));
  CHECK(contains(stall, "mbarrier wait"));
  // Tensor maps the driver refuses: a row stride that is not a multiple of 16 bytes, a box row
  // wider than the 128-byte swizzle.
  std::vector<uint16_t> g(4096);
  CUtensorMap m;
  const cuuint64_t dims[3] = {64, 1, 8}, odd_strides[2] = {120, 120}, strides[2] = {128, 128};
  const cuuint32_t box[3] = {64, 1, 8}, wide_box[3] = {128, 1, 8}, elem[3] = {1, 1, 1};
  CHECK(emu::tensor_map_encode_tiled(&m, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 3, g.data(), dims,
                                     odd_strides, box, elem, CU_TENSOR_MAP_INTERLEAVE_NONE,
                                     CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_NONE,
                                     CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) ==
        CUDA_ERROR_INVALID_VALUE);
  CHECK(emu::tensor_map_encode_tiled(&m, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 3, g.data(), dims,
                                     strides, wide_box, elem, CU_TENSOR_MAP_INTERLEAVE_NONE,
                                     CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_NONE,
                                     CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) ==
        CUDA_ERROR_INVALID_VALUE);
}

}  // namespace
#else
TEST_CASE("SIMT emulator: Hopper operations") {
  std::printf(
      "SKIP: built without the CUDA toolkit (the emulator compiles device code with its "
      "headers)\n");
  std::exit(77);
}
#endif
