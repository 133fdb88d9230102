// The SIMT emulator (see simt_emulator.h): fibers for threads, warp collectives resolved by
// the scheduler once all 32 lanes arrive, deferred cp.async, shared-memory race checks.
#include "tests/cuda_emu/simt_emulator.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "common/error.h"
#include "tests/cuda_emu/fiber_switch.h"
#include "tests/cuda_emu/simt_emulator_internal.h"

namespace ll::cuda::emu {
namespace detail {

constexpr size_t kStackBytes = 256 * 1024;  // per fiber; the kernels' frames are a few KiB
constexpr int kMaxThreads = 1024;

const char* op_name(WarpOp op) {
  switch (op) {
    case WarpOp::Shfl:
      return "shfl.sync";
    case WarpOp::Ldsm:
      return "ldmatrix.x4";
    case WarpOp::LdsmTrans:
      return "ldmatrix.x4.trans";
    case WarpOp::Mma:
      return "mma.m16n8k16";
    case WarpOp::SyncWarp:
      return "__syncwarp";
  }
  return "?";
}

alignas(1024) unsigned char g_smem[kMaxDynamicSmem];
Launch* g_launch = nullptr;
std::vector<GlobalRange> g_globals;
Order g_order = Order::Forward;
BlockFilter g_block_filter;        // empty: every block runs
std::unique_ptr<char[]> g_stacks;  // kStackBytes per fiber, g_stack_fibers of them
int64_t g_stack_fibers = 0;

Launch& L() {
  LL_CHECK(g_launch != nullptr && g_launch->current >= 0,
           "simt emulator: device function called outside an emulated launch");
  return *g_launch;
}
Fiber& self() { return L().fibers[size_t(L().current)]; }

std::string where(const Launch& l, int thread) {
  return fmt::format("kernel {} block ({}, {}, {}) thread {} (warp {}, lane {})", l.name,
                     l.block_idx.x, l.block_idx.y, l.block_idx.z, thread, thread / 32, thread % 32);
}

[[noreturn]] void fail(const std::string& what) {
  Launch& l = L();
  Fiber& f = self();
  if (l.error.empty()) l.error = where(l, l.current) + ": " + what;
  f.state = State::Failed;
  fiber_switch(f.ctx, l.scheduler);
  std::terminate();  // unreachable: a failed fiber is never resumed
}

void block_on(State s) {
  Launch& l = L();
  Fiber& f = self();
  f.state = s;
  fiber_switch(f.ctx, l.scheduler);
}

void fiber_main() {
  Launch& l = *g_launch;
  try {
    (*l.body)();
  } catch (const std::exception& e) {
    fail(std::string("exception in device code: ") + e.what());
  }
  Fiber& f = l.fibers[size_t(l.current)];
  f.state = State::Done;
  fiber_switch(f.ctx, l.scheduler);  // never resumed
  std::terminate();
}

void check_shared_range(uint32_t addr, uint32_t bytes, const char* what) {
  const Launch& l = L();
  if (uint64_t(addr) + bytes > l.smem_bytes)
    fail(
        fmt::format("{} at shared address {} (+{} bytes) is past the {} bytes of dynamic shared "
                    "memory",
                    what, addr, bytes, l.smem_bytes));
  if (addr % bytes != 0)
    fail(fmt::format("{} at shared address {} is not {}-byte aligned", what, addr, bytes));
}

void check_global_range(const unsigned char* src, size_t bytes, const char* what) {
  if (g_globals.empty()) return;
  for (const GlobalRange& r : g_globals)
    if (src >= r.base && src + bytes <= r.base + r.bytes) return;
  fail(fmt::format("{} reads {} bytes at {} outside every registered global buffer", what, bytes,
                   static_cast<const void*>(src)));
}

void complete_copy(Launch& l, int thread, const Copy& c) {
  if (c.valid)
    std::memcpy(g_smem + c.dst, c.src, 16);
  else
    std::memset(g_smem + c.dst, 0, 16);
  const int warp = thread / 32;
  for (uint32_t b = c.dst; b < c.dst + 16; ++b) {
    ByteMeta& m = l.meta[b];
    m.in_flight -= 1;
    m.writer = thread;
    m.write_epoch = l.epoch;
    m.write_warp_sync = l.warp_syncs[size_t(warp)];
  }
}

// ldmatrix reads by warp `warp` of 16 bytes at addr: the bytes must have landed and, when
// another thread wrote them, a barrier must separate that write from this read.
std::string check_read(Launch& l, int warp, uint32_t addr) {
  for (uint32_t b = addr; b < addr + 16; ++b) {
    ByteMeta& m = l.meta[b];
    if (m.in_flight > 0)
      return fmt::format(
          "ldmatrix reads shared byte {} while a cp.async to it is still in "
          "flight (no cp.async.wait_group retired it)",
          b);
    if (m.writer >= 0 && m.write_epoch == l.epoch) {
      const int wwarp = m.writer / 32;
      const bool warp_synced = wwarp == warp && l.warp_syncs[size_t(warp)] > m.write_warp_sync;
      if (!warp_synced)
        return fmt::format(
            "ldmatrix by warp {} reads shared byte {} that thread {} wrote "
            "(cp.async) with no barrier in between",
            warp, b, m.writer);
    }
    if (m.read_epoch != l.epoch) {
      m.read_epoch = l.epoch;
      m.reader_warps = 0;
    }
    m.reader_warps |= 1u << unsigned(warp);
  }
  return {};
}

uint16_t load_bf16_bits(uint32_t addr) {
  uint16_t v;
  std::memcpy(&v, g_smem + addr, 2);
  return v;
}
float bf16_bits_to_float(uint32_t bits16) {
  const uint32_t u = bits16 << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
float lo_half(uint32_t r) { return bf16_bits_to_float(r & 0xffffu); }
float hi_half(uint32_t r) { return bf16_bits_to_float(r >> 16); }

std::string run_ldmatrix(Launch& l, int warp, bool trans) {
  Fiber* lanes = &l.fibers[size_t(warp) * 32];
  for (int i = 0; i < 32; ++i) {
    const uint32_t a = lanes[i].in_u[0];
    if (uint64_t(a) + 16 > l.smem_bytes || a % 16 != 0)
      return fmt::format(
          "ldmatrix row address {} of lane {} is unaligned or past the {} bytes "
          "of dynamic shared memory",
          a, i, l.smem_bytes);
    std::string race = check_read(l, warp, a);
    if (!race.empty()) return race;
  }
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane / 4, t = lane % 4;
    for (int j = 0; j < 4; ++j) {
      uint32_t lo, hi;
      if (!trans) {
        const uint32_t row = lanes[8 * j + g].in_u[0];
        lo = load_bf16_bits(row + 4 * t);
        hi = load_bf16_bits(row + 4 * t + 2);
      } else {
        lo = load_bf16_bits(lanes[8 * j + 2 * t].in_u[0] + 2 * g);
        hi = load_bf16_bits(lanes[8 * j + 2 * t + 1].in_u[0] + 2 * g);
      }
      lanes[lane].out_u[j] = lo | (hi << 16);
    }
  }
  return {};
}

void run_mma(Launch& l, int warp) {
  Fiber* lanes = &l.fibers[size_t(warp) * 32];
  float a[16][16], b[16][8], c[16][8];
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane / 4, t = lane % 4;
    const uint32_t* r = lanes[lane].in_u;  // a0..a3, b0, b1
    const int rows[4] = {g, g + 8, g, g + 8}, cols[4] = {2 * t, 2 * t, 2 * t + 8, 2 * t + 8};
    for (int i = 0; i < 4; ++i) {
      a[rows[i]][cols[i]] = lo_half(r[i]);
      a[rows[i]][cols[i] + 1] = hi_half(r[i]);
    }
    b[2 * t][g] = lo_half(r[4]);
    b[2 * t + 1][g] = hi_half(r[4]);
    b[2 * t + 8][g] = lo_half(r[5]);
    b[2 * t + 9][g] = hi_half(r[5]);
    const float* cf = lanes[lane].in_f;
    c[g][2 * t] = cf[0];
    c[g][2 * t + 1] = cf[1];
    c[g + 8][2 * t] = cf[2];
    c[g + 8][2 * t + 1] = cf[3];
  }
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane / 4, t = lane % 4;
    const int rows[4] = {g, g, g + 8, g + 8}, cols[4] = {2 * t, 2 * t + 1, 2 * t, 2 * t + 1};
    for (int e = 0; e < 4; ++e) {
      float acc = c[rows[e]][cols[e]];
      for (int k = 0; k < 16; ++k) acc += a[rows[e]][k] * b[k][cols[e]];
      lanes[lane].out_f[e] = acc;
    }
  }
}

// Resolves warp `warp` if all its lanes wait at the same warp operation. Returns true when it
// ran one; sets l.error for a divergent warp.
bool resolve_warp(Launch& l, int warp) {
  Fiber* lanes = &l.fibers[size_t(warp) * 32];
  int at_op = 0;
  for (int i = 0; i < 32; ++i) at_op += lanes[i].state == State::AtWarpOp;
  if (at_op == 0) return false;
  if (at_op < 32) return false;  // reported as divergence if nothing else can progress
  const WarpOp op = lanes[0].op;
  for (int i = 1; i < 32; ++i) {
    if (lanes[i].op != op) {
      l.error = fmt::format("{}: lane 0 is at {} but lane {} at {} (divergent warp collective)",
                            where(l, warp * 32), op_name(op), i, op_name(lanes[i].op));
      return false;
    }
  }
  std::string err;
  switch (op) {
    case WarpOp::Shfl:
      for (int i = 0; i < 32; ++i) {
        if (lanes[i].shfl_member_mask != 0xffffffffu) {
          err = fmt::format(
              "shfl.sync member mask {:#x} in lane {} (the emulator, like these "
              "kernels, needs the full warp)",
              lanes[i].shfl_member_mask, i);
          break;
        }
        const int src = i ^ lanes[i].shfl_lane_mask;
        lanes[i].out_u[0] = lanes[src < 32 ? src : i].in_u[0];
      }
      break;
    case WarpOp::Ldsm:
      err = run_ldmatrix(l, warp, false);
      l.stats.ldmatrix += 1;
      break;
    case WarpOp::LdsmTrans:
      err = run_ldmatrix(l, warp, true);
      l.stats.ldmatrix += 1;
      break;
    case WarpOp::Mma:
      run_mma(l, warp);
      l.stats.mma += 1;
      break;
    case WarpOp::SyncWarp:
      l.warp_syncs[size_t(warp)] += 1;
      break;
  }
  if (!err.empty()) {
    l.error = where(l, warp * 32) + ": " + err;
    return false;
  }
  for (int i = 0; i < 32; ++i) lanes[i].state = State::Running;
  l.stats.warp_collectives += 1;
  return true;
}

const char* state_name(const Fiber& f) {
  switch (f.state) {
    case State::Running:
      return "running";
    case State::AtBarrier:
      return "__syncthreads";
    case State::AtWarpOp:
      return op_name(f.op);
    case State::AtGroupOp:
      return group_op_name(f.gop);
    case State::AtMbarrier:
      return "mbarrier wait";
    case State::Done:
      return "exited";
    case State::Failed:
      return "failed";
  }
  return "?";
}

std::string describe_stall(const Launch& l) {
  std::string s = fmt::format("kernel {} block ({}, {}, {}): no thread can progress:", l.name,
                              l.block_idx.x, l.block_idx.y, l.block_idx.z);
  const int n = int(l.fibers.size());
  for (int w = 0; w < n / 32; ++w) {
    s += fmt::format(" warp {} [", w);
    for (int i = 0; i < 32; ++i) {
      // Runs of equal states, "lanes a-b: state".
      int j = i;
      while (j + 1 < 32 && std::strcmp(state_name(l.fibers[size_t(w * 32 + j + 1)]),
                                       state_name(l.fibers[size_t(w * 32 + i)])) == 0)
        ++j;
      s += fmt::format("{}lanes {}-{}: {}", i == 0 ? "" : ", ", i, j,
                       state_name(l.fibers[size_t(w * 32 + i)]));
      i = j;
    }
    s += "]";
  }
  return s;
}

void run_block(Launch& l, Order order) {
  const int n = int(l.fibers.size());
  std::memset(g_smem, 0xff, l.smem_bytes);
  std::fill(l.meta.begin(), l.meta.begin() + long(l.smem_bytes), ByteMeta{});
  std::fill(l.warp_syncs.begin(), l.warp_syncs.end(), 0);
  l.epoch = 0;
  reset_async_state(l);
  for (int i = 0; i < n; ++i) {
    Fiber& f = l.fibers[size_t(i)];
    f.state = State::Running;
    f.committed.clear();
    f.open.clear();
    f.tid = uint3{unsigned(i) % l.block.x, (unsigned(i) / l.block.x) % l.block.y,
                  unsigned(i) / (l.block.x * l.block.y)};
    fiber_init(f.ctx, g_stacks.get() + size_t(i) * kStackBytes, kStackBytes, fiber_main);
  }
  for (;;) {
    for (int k = 0; k < n; ++k) {
      const int i = order == Order::Forward ? k : n - 1 - k;
      Fiber& f = l.fibers[size_t(i)];
      if (f.state != State::Running) continue;
      l.current = i;
      fiber_switch(l.scheduler, f.ctx);
      l.current = -1;
      if (!l.error.empty()) throw Error(l.error);
    }
    bool progressed = false, all_done = true, any_warp_op = false;
    for (int w = 0; w < n / 32; ++w) {
      progressed |= resolve_warp(l, w);
      if (!l.error.empty()) throw Error(l.error);
    }
    for (int wg = 0; wg < n / 128; ++wg) {
      progressed |= resolve_warpgroup(l, wg);
      if (!l.error.empty()) throw Error(l.error);
    }
    progressed |= resolve_mbarrier_waits(l);
    if (!l.error.empty()) throw Error(l.error);
    int at_barrier = 0, done = 0;
    for (const Fiber& f : l.fibers) {
      at_barrier += f.state == State::AtBarrier;
      done += f.state == State::Done;
      all_done &= f.state == State::Done;
      any_warp_op |=
          f.state == State::AtWarpOp || f.state == State::AtGroupOp || f.state == State::AtMbarrier;
    }
    if (all_done) return;
    if (progressed) continue;
    if (!any_warp_op && at_barrier + done == n && at_barrier > 0) {
      // Predicates of __syncthreads_and / _or / _count (in_u[0]; 1 for a plain barrier).
      int all = 1, any = 0, count = 0;
      for (const Fiber& f : l.fibers) {
        if (f.state != State::AtBarrier) continue;
        all &= f.in_u[0] != 0;
        any |= f.in_u[0] != 0;
        count += f.in_u[0] != 0;
      }
      for (Fiber& f : l.fibers) {
        if (f.state != State::AtBarrier) continue;
        f.out_u[0] = uint32_t(f.barrier_reduce == BarrierReduce::And  ? all
                              : f.barrier_reduce == BarrierReduce::Or ? any
                                                                      : count);
        f.state = State::Running;
      }
      l.epoch += 1;
      l.stats.block_barriers += 1;
      continue;
    }
    throw Error(describe_stall(l));
  }
}

}  // namespace detail

using namespace detail;

void register_global(const void* base, size_t bytes) {
  g_globals.push_back({static_cast<const unsigned char*>(base), bytes});
}
void clear_globals() { g_globals.clear(); }
void set_order(Order order) { g_order = order; }
void set_block_filter(BlockFilter filter) { g_block_filter = std::move(filter); }
Order order() { return g_order; }

LaunchStats run_grid(const char* kernel_name, dim3 grid, dim3 block, size_t dynamic_smem,
                     const std::function<void()>& body, Order order) {
  // One launch at a time in the process: the emulator's state (shared memory, the fibers'
  // stacks, the current launch) is global, and ranks on threads (the stand-in NCCL's) launch
  // concurrently. Recursive so that a nested launch reaches the check below instead of
  // deadlocking.
  static std::recursive_mutex one_launch;
  const std::lock_guard<std::recursive_mutex> lock(one_launch);
  LL_CHECK(g_launch == nullptr, "simt emulator: launches do not nest");
  const int64_t threads = int64_t(block.x) * block.y * block.z;
  LL_CHECK(threads > 0 && threads <= kMaxThreads && threads % 32 == 0,
           "simt emulator: {} threads per block (the emulator takes whole warps, at most {})",
           threads, kMaxThreads);
  LL_CHECK(dynamic_smem <= kMaxDynamicSmem,
           "simt emulator: {} bytes of dynamic shared memory exceed the {} a block may have",
           dynamic_smem, kMaxDynamicSmem);
  if (g_stack_fibers < threads) {
    g_stacks.reset(new char[size_t(threads) * kStackBytes]);
    g_stack_fibers = threads;
  }
  Launch l;
  l.name = kernel_name;
  l.grid = grid;
  l.block = block;
  l.smem_bytes = dynamic_smem;
  l.body = &body;
  l.fibers.resize(size_t(threads));
  l.meta.resize(std::max<size_t>(dynamic_smem, 1));
  l.warp_syncs.assign(size_t(threads / 32), 0);
  l.warpgroups.resize(size_t(threads / 128));
  g_launch = &l;
  try {
    for (unsigned z = 0; z < grid.z; ++z)
      for (unsigned y = 0; y < grid.y; ++y)
        for (unsigned x = 0; x < grid.x; ++x) {
          l.block_idx = uint3{x, y, z};
          if (g_block_filter && !g_block_filter(kernel_name, l.block_idx, grid)) continue;
          run_block(l, order);
          l.stats.blocks += 1;
        }
  } catch (...) {
    g_launch = nullptr;
    throw;
  }
  g_launch = nullptr;
  return l.stats;
}

const uint3& thread_idx() { return self().tid; }
const uint3& block_idx() { return L().block_idx; }
const dim3& block_dim() { return L().block; }
const dim3& grid_dim() { return L().grid; }

void sync_threads() { sync_threads_reduce(1, BarrierReduce::And); }

int sync_threads_reduce(int predicate, BarrierReduce op) {
  Fiber& f = self();
  f.in_u[0] = predicate != 0;
  f.barrier_reduce = op;
  block_on(State::AtBarrier);
  return int(f.out_u[0]);
}

void sync_warp() {
  self().op = WarpOp::SyncWarp;
  block_on(State::AtWarpOp);
}

uint32_t shfl_xor(uint32_t value, uint32_t mask, int lane_mask) {
  Fiber& f = self();
  f.op = WarpOp::Shfl;
  f.in_u[0] = value;
  f.shfl_member_mask = mask;
  f.shfl_lane_mask = lane_mask & 31;
  block_on(State::AtWarpOp);
  return f.out_u[0];
}

unsigned char* dynamic_smem() { return g_smem; }

uint32_t shared_address(const void* p) {
  const auto* c = static_cast<const unsigned char*>(p);
  if (c < g_smem || c > g_smem + L().smem_bytes)
    fail(
        "__cvta_generic_to_shared of a pointer outside the dynamic shared memory (the "
        "emulator maps only dynamic shared memory to shared addresses)");
  return uint32_t(c - g_smem);
}

void cp_async_16(uint32_t dst, const void* src, bool valid) {
  Launch& l = L();
  check_shared_range(dst, 16, "cp.async destination");
  const auto* s = static_cast<const unsigned char*>(src);
  if (valid) check_global_range(s, 16, "cp.async");
  const int warp = l.current / 32;
  for (uint32_t b = dst; b < dst + 16; ++b) {
    ByteMeta& m = l.meta[b];
    if (m.read_epoch == l.epoch && (m.reader_warps & ~(1u << unsigned(warp))) != 0)
      fail(
          fmt::format("cp.async overwrites shared byte {} that warp(s) {:#x} read since the "
                      "last barrier",
                      b, m.reader_warps & ~(1u << unsigned(warp))));
    m.in_flight += 1;
  }
  (valid ? l.stats.cp_async_bytes : l.stats.cp_async_zero_bytes) += 16;
  self().open.push_back({dst, s, valid});
}

void cp_async_commit() {
  Fiber& f = self();
  f.committed.push_back(std::move(f.open));
  f.open.clear();
}

void cp_async_wait(int pending_allowed) {
  Launch& l = L();
  Fiber& f = self();
  while (int(f.committed.size()) > pending_allowed) {
    for (const Copy& c : f.committed.front()) complete_copy(l, l.current, c);
    f.committed.erase(f.committed.begin());
  }
}

void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr, bool trans) {
  Fiber& f = self();
  f.op = trans ? WarpOp::LdsmTrans : WarpOp::Ldsm;
  f.in_u[0] = addr;
  block_on(State::AtWarpOp);
  for (int j = 0; j < 4; ++j) r[j] = f.out_u[j];
}

void mma_m16n8k16_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  Fiber& f = self();
  f.op = WarpOp::Mma;
  for (int i = 0; i < 4; ++i) f.in_u[i] = a[i];
  f.in_u[4] = b0;
  f.in_u[5] = b1;
  for (int i = 0; i < 4; ++i) f.in_f[i] = d[i];
  block_on(State::AtWarpOp);
  for (int i = 0; i < 4; ++i) d[i] = f.out_f[i];
}

uint32_t pack_bf16x2(float lo, float hi) {
  auto round = [](float x) -> uint32_t {
    uint32_t u;
    std::memcpy(&u, &x, 4);
    if (std::isnan(x)) return 0x7fffu;  // canonical NaN, as cvt produces
    u += 0x7fffu + ((u >> 16) & 1u);    // round to nearest even
    return u >> 16;
  };
  return round(lo) | (round(hi) << 16);
}

}  // namespace ll::cuda::emu
