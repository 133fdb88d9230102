// The SIMT emulator itself (tests/cuda_emu/simt_emulator.h): ldmatrix feeding mma computes a
// real matrix product (the property the tensor-core kernels rely on: the PTX fragment layouts
// of both instructions agree), warp shuffles, barrier reductions, per-block __shared__
// variables and the poisoned dynamic shared memory; and every error it promises to report
// (divergent collectives, deadlocks, reads of in-flight copies, missing barriers, out-of-range
// shared and global addresses) is reported with a message saying what happened.
#if defined(LL_HAVE_SIMT_EMULATOR)
#include "tests/cuda_emu/cuda_prelude.h"
#endif

#include <doctest/doctest.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "common/error.h"
#include "tests/error_text.h"

#if defined(LL_HAVE_SIMT_EMULATOR)
#include "kernels/cuda/tc_ptx.cuh"

namespace {

namespace emu = ll::cuda::emu;
using ll::cuda::dynamic_smem;
using ll::cuda::tc::cp_async_16;
using ll::cuda::tc::cp_async_commit;
using ll::cuda::tc::cp_async_wait;
using ll::cuda::tc::ldsm_x4;
using ll::cuda::tc::ldsm_x4_trans;
using ll::cuda::tc::mma_bf16;

uint16_t bf16_of(int v) {  // small integers are exact in bf16
  const float f = float(v);
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return uint16_t(u >> 16);
}

// One warp: A [16, 16] row-major and B at smem + 512 ([16 n, 16 k] row-major, or [16 k, 16 n]
// for trans) -> D [16, 16] fp32 row-major in `d` (two n8 tiles). Inputs copied with cp.async.
__global__ void mma_kernel(float* d, const uint16_t* a, const uint16_t* b, bool trans) {
  const int lane = int(threadIdx.x);
  const uint32_t s = uint32_t(__cvta_generic_to_shared(dynamic_smem()));
  // 32 chunks of 16 bytes each: one per lane.
  cp_async_16(s + 16u * uint32_t(lane), a + 8 * lane, true);
  cp_async_16(s + 512u + 16u * uint32_t(lane), b + 8 * lane, true);
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();
  uint32_t af[4], bf[4];
  // A: matrices rows 0-7 | 8-15 | 0-7 | 8-15 x k half 0 | 0 | 1 | 1.
  ldsm_x4(af, s + uint32_t((lane & 15) * 32 + (lane >> 4) * 16));
  if (!trans)  // B as [n, k]: matrices n 0-7 | 0-7 | 8-15 | 8-15 x k half 0 | 1 | 0 | 1.
    ldsm_x4(bf,
            s + 512u + uint32_t(((lane & 7) + ((lane >> 4) << 3)) * 32 + ((lane >> 3) & 1) * 16));
  else  // B as [k, n], transposed: matrices k 0-7 | 8-15 | 0-7 | 8-15 x n half 0 | 0 | 1 | 1.
    ldsm_x4_trans(
        bf, s + 512u + uint32_t(((lane & 7) + (((lane >> 3) & 1) << 3)) * 32 + (lane >> 4) * 16));
  float acc[2][4] = {};
  mma_bf16(acc[0], af, bf[0], bf[1]);
  mma_bf16(acc[1], af, bf[2], bf[3]);
  const int g = lane >> 2, t = lane & 3;
  for (int nt = 0; nt < 2; ++nt) {
    d[g * 16 + nt * 8 + 2 * t] = acc[nt][0];
    d[g * 16 + nt * 8 + 2 * t + 1] = acc[nt][1];
    d[(g + 8) * 16 + nt * 8 + 2 * t] = acc[nt][2];
    d[(g + 8) * 16 + nt * 8 + 2 * t + 1] = acc[nt][3];
  }
}

TEST_CASE("emulated ldmatrix + mma.m16n8k16 compute A B, B non-transposed and transposed") {
  std::vector<int> a(256), b(256);  // A [m][k], B [k][n]
  for (int i = 0; i < 256; ++i) {
    a[size_t(i)] = (i * 7 + 3) % 11 - 5;
    b[size_t(i)] = (i * 5 + 1) % 13 - 6;
  }
  std::vector<uint16_t> a16(256), b_nk(256), b_kn(256);
  for (int m = 0; m < 16; ++m)
    for (int k = 0; k < 16; ++k) a16[size_t(m * 16 + k)] = bf16_of(a[size_t(m * 16 + k)]);
  for (int k = 0; k < 16; ++k)
    for (int n = 0; n < 16; ++n) {
      b_kn[size_t(k * 16 + n)] = bf16_of(b[size_t(k * 16 + n)]);
      b_nk[size_t(n * 16 + k)] = bf16_of(b[size_t(k * 16 + n)]);
    }
  for (bool trans : {false, true}) {
    INFO("trans " << trans);
    std::vector<float> d(256, -1.0f);
    const emu::LaunchStats st =
        emu::launch("mma_kernel", mma_kernel, dim3(1), dim3(32), 1024, d.data(), a16.data(),
                    trans ? b_kn.data() : b_nk.data(), trans);
    CHECK(st.blocks == 1);
    CHECK(st.block_barriers == 1);
    CHECK(st.warp_collectives == 4);  // 2 ldmatrix, 2 mma
    int wrong = 0;
    for (int m = 0; m < 16; ++m)
      for (int n = 0; n < 16; ++n) {
        int ref = 0;
        for (int k = 0; k < 16; ++k) ref += a[size_t(m * 16 + k)] * b[size_t(k * 16 + n)];
        wrong += d[size_t(m * 16 + n)] != float(ref);
      }
    CHECK(wrong == 0);
  }
}

__global__ void shuffle_kernel(int* out) {
  const int tid = int(threadIdx.x);
  int v = tid;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  __shared__ int first_of_warp[2];
  if ((tid & 31) == 0) first_of_warp[tid >> 5] = v;
  __syncthreads();
  const float f = __shfl_xor_sync(0xffffffffu, float(tid) * 0.5f, 1);
  out[tid] = first_of_warp[1 - (tid >> 5)] * 1000 + int(f * 2.0f);
}

TEST_CASE("emulated shuffles, __shared__ variables per block and the poisoned shared memory") {
  std::vector<int> out(64);
  emu::launch("shuffle_kernel", shuffle_kernel, dim3(1), dim3(64), 0, out.data());
  // Warp sums: warp 0 496, warp 1 1520; each thread reads the other warp's through __shared__.
  for (int tid = 0; tid < 64; ++tid) {
    const int other = tid < 32 ? 1520 : 496;
    CHECK(out[size_t(tid)] == other * 1000 + (tid ^ 1));
  }
}

__global__ void barrier_reduce_kernel(int* out) {
  const int tid = int(threadIdx.x);
  out[tid] = __syncthreads_and(tid != 5) * 1000000 + __syncthreads_or(tid == 63) * 1000 +
             __syncthreads_count(tid % 3 == 0);
}

TEST_CASE("emulated __syncthreads_and / _or / _count reduce over the whole block") {
  std::vector<int> out(64);
  const emu::LaunchStats st =
      emu::launch("barrier_reduce_kernel", barrier_reduce_kernel, dim3(1), dim3(64), 0, out.data());
  CHECK(st.block_barriers == 3);
  for (int x : out) CHECK(x == 0 * 1000000 + 1 * 1000 + 22);
}

__global__ void poison_kernel(uint32_t* out) {
  out[threadIdx.x] = reinterpret_cast<const uint32_t*>(dynamic_smem())[threadIdx.x];
  reinterpret_cast<uint32_t*>(dynamic_smem())[threadIdx.x] = 7u;  // the next block sees poison
}

TEST_CASE("each block's dynamic shared memory starts as 0xFF bytes (NaN as bf16 and fp32)") {
  std::vector<uint32_t> out(32, 0);
  emu::launch("poison_kernel", poison_kernel, dim3(2), dim3(32), 128, out.data());
  for (uint32_t x : out) CHECK(x == 0xffffffffu);
}

// Error cases: `what` selects the mistake.
__global__ void faulty_kernel(int what, const uint16_t* g) {
  const int tid = int(threadIdx.x), lane = tid & 31, warp = tid >> 5;
  const uint32_t s = uint32_t(__cvta_generic_to_shared(dynamic_smem()));
  uint32_t r[4];
  switch (what) {
    case 0:  // divergent collective: lane 0 at __syncwarp, the others at a shuffle
      if (lane == 0)
        __syncwarp();
      else
        (void)__shfl_xor_sync(0xffffffffu, lane, 1);
      break;
    case 1:  // deadlock: warp 1 split between a shuffle and __syncthreads
      if (warp == 1 && lane < 16)
        (void)__shfl_xor_sync(0xffffffffu, lane, 1);
      else
        __syncthreads();
      break;
    case 2:  // ldmatrix before cp.async.wait_group
      cp_async_16(s + 16u * uint32_t(lane), g + 8 * lane, true);
      cp_async_commit();
      ldsm_x4(r, s + 16u * uint32_t(lane));
      break;
    case 3:  // warp 1 copies and waits; warp 0 reads with no barrier in between
      if (warp == 1) {
        cp_async_16(s + 16u * uint32_t(lane), g + 8 * lane, true);
        cp_async_commit();
        cp_async_wait<0>();
      }
      __syncwarp();
      if (warp == 0) ldsm_x4(r, s + 16u * uint32_t(lane));
      break;
    case 4:  // warp 0 reads, warp 1 overwrites with no barrier in between
      if (warp == 0) ldsm_x4(r, s + 16u * uint32_t(lane));
      __syncwarp();
      if (warp == 1) cp_async_16(s + 16u * uint32_t(lane), g + 8 * lane, true);
      break;
    case 5:  // copy past the dynamic shared memory (1024 bytes)
      cp_async_16(s + 1024u + 16u * uint32_t(lane), g, true);
      break;
    case 6:  // copy from outside the registered global buffer (256 bf16)
      cp_async_16(s + 16u * uint32_t(lane), g + 256 + 8 * lane, true);
      break;
    case 7:  // the correct version of cases 3 and 4: no error
      if (warp == 1) {
        cp_async_16(s + 16u * uint32_t(lane), g + 8 * lane, true);
        cp_async_commit();
        cp_async_wait<0>();
      }
      __syncthreads();
      if (warp == 0) ldsm_x4(r, s + 16u * uint32_t(lane));
      __syncthreads();
      if (warp == 1) cp_async_16(s + 16u * uint32_t(lane), g + 8 * lane, false);
      cp_async_commit();
      cp_async_wait<0>();
      break;
  }
}

std::string fault_of(int what) {
  std::vector<uint16_t> g(512, 0);
  emu::clear_globals();
  emu::register_global(g.data(), 256 * 2);
  std::string msg;
  try {
    emu::launch("faulty_kernel", faulty_kernel, dim3(1), dim3(64), 1024, what, g.data());
  } catch (const ll::Error& e) {
    msg = e.what();
  }
  emu::clear_globals();
  return msg;
}

TEST_CASE("the emulator reports divergence, deadlock, races and out-of-range addresses") {
  using ll::test::contains;
  const std::string divergent = fault_of(0);
  CHECK(contains(divergent, "faulty_kernel block (0, 0, 0)"));
  CHECK(contains(divergent, "lane 0 is at __syncwarp but lane 1 at shfl.sync"));
  CHECK(contains(divergent, "divergent warp collective"));
  const std::string deadlock = fault_of(1);
  CHECK(contains(deadlock, "no thread can progress"));
  CHECK(contains(deadlock, "warp 1 [lanes 0-15: shfl.sync, lanes 16-31: __syncthreads]"));
  CHECK(contains(fault_of(2), "while a cp.async to it is still in flight"));
  CHECK(contains(fault_of(3), "with no barrier in between"));
  CHECK(contains(fault_of(4), "cp.async overwrites shared byte"));
  CHECK(contains(fault_of(4), "that warp(s) 0x1 read since the last barrier"));
  CHECK(contains(fault_of(5), "is past the 1024 bytes of dynamic shared memory"));
  CHECK(contains(fault_of(6), "outside every registered global buffer"));
  CHECK(fault_of(7).empty());
  // A failed launch leaves the emulator usable.
  std::vector<int> out(64);
  emu::launch("shuffle_kernel", shuffle_kernel, dim3(1), dim3(64), 0, out.data());
  CHECK(out[0] == 1520 * 1000 + 1);
}

TEST_CASE("launches from several threads run one at a time, each correct") {
  // Ranks on threads (the emulated build's stand-in NCCL) launch kernels concurrently; the
  // emulator's state is global, so it serialises them.
  std::vector<std::thread> threads;
  std::vector<int> wrong(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([t, &wrong] {
      for (int round = 0; round < 20; ++round) {
        std::vector<int> out(64);
        emu::launch("shuffle_kernel", shuffle_kernel, dim3(1), dim3(64), 0, out.data());
        for (int tid = 0; tid < 64; ++tid)
          wrong[size_t(t)] += out[size_t(tid)] != (tid < 32 ? 1520 : 496) * 1000 + (tid ^ 1);
      }
    });
  }
  for (std::thread& th : threads) th.join();
  for (int w : wrong) CHECK(w == 0);
}

TEST_CASE("launches the emulator refuses") {
  std::vector<int> out(64);
  CHECK_THROWS_WITH_AS(
      emu::launch("shuffle_kernel", shuffle_kernel, dim3(1), dim3(48), 0, out.data()),
      doctest::Contains("whole warps"), ll::Error);
  CHECK_THROWS_WITH_AS(emu::launch("shuffle_kernel", shuffle_kernel, dim3(1), dim3(64),
                                   emu::kMaxDynamicSmem + 1, out.data()),
                       doctest::Contains("dynamic shared memory exceed"), ll::Error);
}

}  // namespace
#else
TEST_CASE("SIMT emulator") {
  std::printf(
      "SKIP: built without the CUDA toolkit (the emulator compiles CUDA device code "
      "with its headers)\n");
  std::exit(77);
}
#endif
