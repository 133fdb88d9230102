#pragma once
// A host emulator for the small subset of CUDA / PTX the tensor-core attention kernels use, so
// that their device code (compiled as host C++ through kernels/cuda/emu/cuda_prelude.h) runs
// on a machine without a GPU and is tested against the CPU reference.
//
// Execution model: the blocks of a grid run one after another; the threads of a block are
// cooperative fibers (fiber_switch.h) on the calling OS thread, scheduled round-robin until each
// one blocks at a barrier or a warp collective. A warp collective (shfl, ldmatrix, mma, __syncwarp)
// completes when all 32 lanes of the warp have arrived at the same operation; __syncthreads
// when every running thread of the block has. Anything else is reported as an error (a
// divergent collective, a deadlock) with the block and the threads involved.
//
// Semantics follow the PTX ISA, written from its specification (not from the kernels):
//   mma.sync.m16n8k16.row.col.f32.bf16.bf16.f32: lane = 4 g + t; A regs (g, 2t..2t+1),
//     (g+8, 2t..), (g, 2t+8..), (g+8, 2t+8..); B regs (k 2t..2t+1, n g), (k 2t+8.., n g);
//     C/D (g, 2t), (g, 2t+1), (g+8, 2t), (g+8, 2t+1); the lower column / row in the low half.
//     Products are exact (bf16 x bf16 fits fp32); sums are fp32 in k order after C.
//   ldmatrix.sync.m8n8.x4[.trans].b16: lanes 8j..8j+7 give the row addresses of matrix j;
//     lane l receives of matrix j row l/4, elements 2(l%4), 2(l%4)+1 (transposed: rows
//     2(l%4), 2(l%4)+1 of column l/4).
//   cp.async.cg 16 bytes with src-size 0 or 16: queued per thread, performed when a
//     cp.async.wait_group retires its group (the latest moment the hardware may do it), so a
//     read before the wait sees the poison the shared memory starts with.
// Checks beyond the hardware's: dynamic shared memory starts filled with 0xFF bytes (NaN as
// bf16 and fp32); every shared address is bounds-checked against the launch's dynamic size;
// cp.async sources must lie in a registered global range when any is registered; a shared
// byte read by ldmatrix in the same barrier interval (block epoch) in which another thread's
// cp.async completed it, or overwritten by a cp.async issued in the interval in which another
// warp read it, is reported as a race.
//
// Not emulated: timing, occupancy, register limits, memory-model subtleties beyond the race
// check above, and the inline-asm wrappers themselves (kernels/cuda/tc_ptx.cuh): under the
// emulator those wrappers are replaced by calls into this file, so their operand lists are
// proven only by a run on a GPU.
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

  LaunchStats& operator+=(const LaunchStats& o) {
    blocks += o.blocks;
    warp_collectives += o.warp_collectives;
    block_barriers += o.block_barriers;
    mma += o.mma;
    ldmatrix += o.ldmatrix;
    cp_async_bytes += o.cp_async_bytes;
    cp_async_zero_bytes += o.cp_async_zero_bytes;
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

}  // namespace ll::cuda::emu
