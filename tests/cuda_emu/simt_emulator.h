#pragma once
// A host emulator for the subset of CUDA / PTX the kernels use (warps of cooperative fibers;
// shuffles, barriers, ldmatrix, mma.sync, cp.async; on sm_90a wgmma, mbarriers, bulk tensor
// copies), so that their device code, compiled as host C++ through
// tests/cuda_emu/cuda_prelude.h, runs without a GPU and is tested against the CPU reference.
// Errors (divergent collectives, deadlocks, out-of-bounds shared memory, races, reads of
// poisoned shared memory) throw ll::Error naming the block and threads. The inline-PTX wrappers
// themselves are not emulated. Execution model and semantics: docs/subsystems/simt-emulator.md.
#include <cuda.h>          // CUtensorMap and its enums (types only; no driver library)
#include <cuda_runtime.h>  // dim3, uint3

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>

namespace ll::cuda::emu {

// Largest dynamic shared memory a launch may ask for (an H100's 227 KiB per block).
constexpr size_t kMaxDynamicSmem = 227 * 1024;

struct LaunchStats {
  int64_t blocks = 0;
  int64_t warp_collectives = 0;  // completed warp operations (all lanes)
  int64_t block_barriers = 0;
  int64_t mma = 0;                  // warp-wide mma.m16n8k16 instructions
  int64_t ldmatrix = 0;             // warp-wide ldmatrix.x4 instructions
  int64_t cp_async_bytes = 0;       // bytes cp.async read from global memory (src-size 16)
  int64_t cp_async_zero_bytes = 0;  // bytes cp.async zero-filled (src-size 0)
  int64_t wgmma = 0;                // warpgroup-wide wgmma.mma_async instructions
  int64_t wgmma_flops = 0;          // 2 * 64 * N * 16 per wgmma
  int64_t bulk_copy_bytes = 0;      // shared bytes written by bulk tensor copies (box bytes)

  LaunchStats& operator+=(const LaunchStats& o) {
    blocks += o.blocks;
    warp_collectives += o.warp_collectives;
    block_barriers += o.block_barriers;
    mma += o.mma;
    ldmatrix += o.ldmatrix;
    cp_async_bytes += o.cp_async_bytes;
    cp_async_zero_bytes += o.cp_async_zero_bytes;
    wgmma += o.wgmma;
    wgmma_flops += o.wgmma_flops;
    bulk_copy_bytes += o.bulk_copy_bytes;
    return *this;
  }
};

// Runs `body` as every thread of every block of the grid. Throws ll::Error on any error the
// emulator detects (the message names the kernel, block, warp or thread and what happened).
// Scheduling order of the fibers: forward (thread 0 first) or reverse; a kernel without races
// gives the same bytes in both.
enum class Order { Forward, Reverse };
LaunchStats run_grid(const char* kernel_name, dim3 grid, dim3 block, size_t dynamic_smem,
                     const std::function<void()>& body, Order order = Order::Forward);

// Global memory ranges cp.async may read (bytes). Empty: unchecked. Cleared by clear_globals.
void register_global(const void* base, size_t bytes);
void clear_globals();

// Scheduling order used by launch() (the test runs kernels under both).
void set_order(Order order);
Order order();

// Which blocks run_grid runs: every block when empty (the default). A test of a huge logical
// tensor (rows past 2^31 elements, backed by sparse memory) runs only the blocks whose outputs
// it checks; the others are skipped as if the grid had no work for them (LaunchStats::blocks
// counts the blocks that ran).
using BlockFilter =
    std::function<bool(const char* kernel_name, const uint3& block, const dim3& grid)>;
void set_block_filter(BlockFilter filter);

// Launches a kernel function pointer with its arguments converted to its parameter types,
// like cudaLaunchKernel.
template <typename... P, typename... A>
LaunchStats launch(const char* name, void (*kernel)(P...), dim3 grid, dim3 block, size_t smem,
                   A&&... args) {
  static_assert(sizeof...(P) == sizeof...(A), "argument count does not match the kernel");
  auto body = [&]() { kernel(static_cast<P>(args)...); };
  return run_grid(name, grid, block, smem, body, order());
}

// ---- Called from the emulated device code (valid only inside run_grid). ----
const uint3& thread_idx();
const uint3& block_idx();
const dim3& block_dim();
const dim3& grid_dim();
void sync_threads();
// __syncthreads_and / _or / _count: a block barrier that also reduces a predicate over the
// block's running threads.
enum class BarrierReduce { And, Or, Count };
int sync_threads_reduce(int predicate, BarrierReduce op);
void sync_warp();
uint32_t shfl_xor(uint32_t value, uint32_t mask, int lane_mask);

unsigned char* dynamic_smem();
uint32_t shared_address(const void* p);  // __cvta_generic_to_shared for dynamic shared memory

void cp_async_16(uint32_t dst, const void* src, bool valid);
void cp_async_commit();
void cp_async_wait(int pending_allowed);
void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr, bool trans);
void mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);
uint32_t pack_bf16x2(float lo, float hi);  // cvt.rn.bf16x2.f32 (lo in the low half)

// ---- Hopper (sm_90a) asynchronous operations (simt_emulator_async.cpp) ----
// mbarrier (shared::cta, 8-byte aligned in dynamic shared memory): init with the arrival count
// of a phase; a phase completes when all arrivals came and the expected transaction bytes
// landed; wait_parity(p) returns once the phase of parity p has completed (the current phase's
// parity is then not p), like a loop over mbarrier.try_wait.parity.
//   Bulk tensor copies (cp.async.bulk.tensor.Nd.shared::cluster.global.mbarrier::complete_tx::
// bytes, N <= 3) land when a thread waits on their barrier (the latest moment the hardware
// may finish them); their box bytes count as transaction bytes; elements outside the tensor
// are zero-filled. Swizzle 128B: byte address a of the box image is stored at
// a ^ (((a >> 7) & 7) << 4) (the emulator requires a 1024-byte-aligned destination and rows of
// exactly 128 bytes, so this is "16-byte chunk c of row r at c ^ (r % 8)").
//   wgmma.mma_async.sync.aligned.m64nNk16.f32.bf16.bf16 (N = 8..256 by 8): a warpgroup
// collective (4 consecutive warps, the first one's index divisible by 4); performed when a
// wgmma.wait_group retires its commit group, reading the shared operands then. Descriptors
// (PTX ISA "matrix descriptor"): start address bits 0-13, leading byte offset (LBO) 16-29,
// stride byte offset (SBO) 32-45 (all >> 4), base offset 49-51 (must be 0), swizzle 62-63
// (must be 1: 128B). Element addresses before the swizzle:
//   K-major (A, or B with trans_b 0), row r of M / N, k < 16:  start + (r / 8) SBO + (r % 8) 128 +
//   2k N-major B (trans_b 1), k < 16, column n:  start + (n / 64) LBO + 2 (n % 64) + (k % 8) 128 +
//   (k / 8) SBO
// Register fragments (thread t of the warpgroup, warp w = t / 32, lane = 4 g + q):
//   A (bf16x2 a0..a3): rows 16w + g, 16w + g + 8, 16w + g, 16w + g + 8; columns 2q, 2q, 2q + 8,
//   2q + 8 (and + 1 in the high half).  D[i], i < N / 2: row 16w + g + 8 ((i % 4) / 2), column
//   8 (i / 4) + 2q + (i % 2).
void mbarrier_init(uint32_t addr, uint32_t count);
void mbarrier_arrive(uint32_t addr);
void mbarrier_arrive_expect_tx(uint32_t addr, uint32_t tx_bytes);
void mbarrier_wait_parity(uint32_t addr, uint32_t parity);
void bulk_tensor_load(uint32_t dst, const CUtensorMap* map, int rank, const int32_t* coords,
                      uint32_t mbar);
void wgmma_fence();
// d: this thread's N / 2 accumulators; a_regs: A fragment, or null for A from desc_a.
void wgmma_bf16(float* d, int n, uint64_t desc_a, const uint32_t* a_regs, uint64_t desc_b,
                bool scale_d, bool trans_b);
void wgmma_commit();
void wgmma_wait(int pending_allowed);

// cuTensorMapEncodeTiled for the emulator (same signature; bf16, rank <= 3, element strides 1,
// swizzle none or 128B, zero fill): checks the driver's rules on alignment and sizes and stores
// the emulator's encoding in the map.
CUresult tensor_map_encode_tiled(CUtensorMap* map, CUtensorMapDataType type, cuuint32_t rank,
                                 void* base, const cuuint64_t* dims, const cuuint64_t* strides,
                                 const cuuint32_t* box, const cuuint32_t* element_strides,
                                 CUtensorMapInterleave interleave, CUtensorMapSwizzle swizzle,
                                 CUtensorMapL2promotion l2, CUtensorMapFloatOOBfill fill);

}  // namespace ll::cuda::emu
