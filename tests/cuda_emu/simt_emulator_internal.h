#pragma once
// The SIMT emulator's internal state (simt_emulator.cpp: scheduler, warp collectives, cp.async;
// simt_emulator_async.cpp: mbarrier, bulk tensor copies, wgmma). Not for kernels or tests.
#include <cuda.h>  // CUtensorMap
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "tests/cuda_emu/fiber_switch.h"
#include "tests/cuda_emu/simt_emulator.h"

namespace ll::cuda::emu::detail {

// One thread's operands of a wgmma.mma_async (m64nNk16, bf16 -> fp32).
struct WgmmaArgs {
  uint64_t desc_a = 0, desc_b = 0;
  bool a_in_regs = false;
  uint32_t a[4] = {};    // A fragment (a_in_regs)
  float* d = nullptr;    // this thread's N / 2 accumulators
  int n = 0;             // N
  bool scale_d = false;  // D = A B + D (true) or A B
  bool trans_b = false;  // B N-major (MN-major) instead of K-major
  int wait_pending = 0;  // wgmma.wait_group N
};

// A wgmma of a whole warpgroup, issued but not yet performed (it is performed when a
// wgmma.wait_group retires its group: the latest moment the hardware may finish it).
struct WgmmaOp {
  WgmmaArgs args;                // thread 0's (descriptors, N, flags: uniform over the group)
  uint32_t a_frag[128][4] = {};  // per thread, when A is in registers
  float* d[128] = {};            // per thread
  uint32_t lo = 0, hi = 0;       // shared bytes [lo, hi) the operands may touch
};

struct WarpgroupAsync {
  std::vector<WgmmaOp> open;                   // issued since the last commit_group
  std::deque<std::vector<WgmmaOp>> committed;  // oldest first
};

// The emulator's encoding of a tensor map (stored in CUtensorMap's opaque bytes).
struct EmuTensorMap {
  uint64_t magic;
  const unsigned char* base;
  uint32_t rank;
  uint32_t swizzle_128b;  // 1: CU_TENSOR_MAP_SWIZZLE_128B, 0: none
  uint64_t dims[3];
  uint64_t strides[3];  // bytes; strides[0] = element size (2, bf16)
  uint32_t box[3];
};
static_assert(sizeof(EmuTensorMap) <= sizeof(CUtensorMap), "fits the opaque map");

struct BulkCopy {
  uint32_t dst;
  EmuTensorMap map;
  int32_t coords[3];
  int thread;
};

struct Mbarrier {
  uint32_t expected = 0;         // arrivals per phase
  uint32_t pending = 0;          // arrivals still missing in the current phase
  int64_t tx = 0;                // transaction bytes still expected in the current phase
  uint64_t completed = 0;        // phases completed (the current phase's parity is completed & 1)
  std::vector<BulkCopy> copies;  // bulk copies signalling this barrier, not yet landed
};

// AtGroupOp: a warpgroup collective (wgmma.*, all 128 threads of 4 consecutive warps);
// AtMbarrier: waiting for an mbarrier phase (mbarrier.try_wait.parity in a loop).
enum class State { Running, AtBarrier, AtWarpOp, AtGroupOp, AtMbarrier, Done, Failed };
enum class WarpOp { Shfl, Ldsm, LdsmTrans, Mma, SyncWarp };
enum class GroupOp { Fence, Mma, Commit, Wait };

struct Copy {
  uint32_t dst;
  const unsigned char* src;
  bool valid;
};

struct Fiber {
  FiberContext ctx;
  State state = State::Running;
  WarpOp op = WarpOp::SyncWarp;
  uint3 tid{};
  // Warp-op operands and results.
  uint32_t in_u[6] = {};
  float in_f[4] = {};
  uint32_t shfl_member_mask = 0;
  BarrierReduce barrier_reduce = BarrierReduce::And;
  int shfl_lane_mask = 0;
  uint32_t out_u[4] = {};
  float out_f[4] = {};
  std::vector<std::vector<Copy>> committed;  // oldest first
  std::vector<Copy> open;
  // Warpgroup-op operands (wgmma) and the mbarrier wait (in_u[0] address, in_u[1] parity).
  GroupOp gop = GroupOp::Fence;
  WgmmaArgs wgmma;
};

// Race bookkeeping per dynamic shared-memory byte.
struct ByteMeta {
  int32_t writer = -1;           // thread whose cp.async last completed this byte
  int64_t write_epoch = -1;      // block epoch of that completion
  int64_t write_warp_sync = -1;  // the writer warp's __syncwarp count at completion
  int64_t read_epoch = -1;       // block epoch of the last ldmatrix reads
  uint32_t reader_warps = 0;     // warps that read it in read_epoch (bit per warp)
  int32_t in_flight = 0;         // issued cp.async / bulk tensor copies not yet completed
};

struct GlobalRange {
  const unsigned char* base;
  size_t bytes;
};

struct Launch {
  const char* name = "";
  dim3 grid, block;
  uint3 block_idx{};
  size_t smem_bytes = 0;
  const std::function<void()>* body = nullptr;
  std::vector<Fiber> fibers;
  std::vector<ByteMeta> meta;
  std::vector<int64_t> warp_syncs;  // __syncwarp count per warp
  int64_t epoch = 0;                // block barriers so far
  int current = -1;
  FiberContext scheduler;
  std::string error;
  LaunchStats stats;
  std::vector<WarpgroupAsync> warpgroups;  // wgmma state per warpgroup (threads / 128)
  std::map<uint32_t, Mbarrier> mbarriers;  // by shared address
};

extern unsigned char g_smem[kMaxDynamicSmem];  // 1024-byte aligned (its definition)
extern Launch* g_launch;

Launch& L();
Fiber& self();
std::string where(const Launch& l, int thread);
// Records the error and leaves the fiber for good (it is never resumed).
[[noreturn]] void fail(const std::string& what);
void block_on(State s);
void check_shared_range(uint32_t addr, uint32_t bytes, const char* what);
void check_global_range(const unsigned char* src, size_t bytes, const char* what);
uint16_t load_bf16_bits(uint32_t addr);
float bf16_bits_to_float(uint32_t bits16);

// simt_emulator_async.cpp, called by the scheduler between rounds: each returns true when it
// let a thread go on; errors go to l.error.
bool resolve_warpgroup(Launch& l, int warpgroup);
bool resolve_mbarrier_waits(Launch& l);
void reset_async_state(Launch& l);
const char* group_op_name(GroupOp op);

}  // namespace ll::cuda::emu::detail
