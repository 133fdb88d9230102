// The SIMT emulator's Hopper operations (see simt_emulator.h): mbarriers, bulk tensor copies
// (TMA) that land when their barrier is waited on, and wgmma performed when wait_group retires
// its group. Written from the PTX ISA; the kernels' asm wrappers are not emulated.
#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <string>

#include "tests/cuda_emu/simt_emulator_internal.h"

namespace ll::cuda::emu {
namespace detail {
namespace {

constexpr uint64_t kMapMagic = 0x4c4c454d55544d41ull;  // "LLEMUTMA"

uint32_t swizzle128(uint32_t a) { return a ^ (((a >> 7) & 7u) << 4); }

struct Desc {
  uint32_t start, lbo, sbo, base_offset, swizzle;
};
Desc decode(uint64_t d) {
  return {uint32_t(d & 0x3fff) << 4, uint32_t((d >> 16) & 0x3fff) << 4,
          uint32_t((d >> 32) & 0x3fff) << 4, uint32_t((d >> 49) & 7), uint32_t(d >> 62)};
}

// Shared byte address (before the swizzle) of element (r, k) of a K-major operand and of
// element (k, n) of an N-major one.
uint32_t kmajor_addr(const Desc& d, int r, int k) {
  return d.start + uint32_t(r / 8) * d.sbo + uint32_t(r % 8) * 128u + uint32_t(2 * k);
}
uint32_t nmajor_addr(const Desc& d, int k, int n) {
  return d.start + uint32_t(n / 64) * d.lbo + uint32_t(2 * (n % 64)) + uint32_t(k % 8) * 128u +
         uint32_t(k / 8) * d.sbo;
}

std::string check_desc(const Desc& d, const char* which) {
  if (d.swizzle != 1)
    return fmt::format("wgmma {} descriptor: swizzle mode {} (the emulator implements 1, 128B)",
                       which, d.swizzle);
  if (d.base_offset != 0)
    return fmt::format("wgmma {} descriptor: base offset {} (the emulator implements 0)", which,
                       d.base_offset);
  return {};
}

// [lo, hi) of the bytes an operand may touch (the swizzle stays within a 1024-byte atom).
void extend_footprint(uint32_t& lo, uint32_t& hi, uint32_t first, uint32_t last) {
  lo = std::min(lo, first & ~1023u);
  hi = std::max(hi, (last | 1023u) + 1);
}

// Reads element `addr` (before the swizzle) for warpgroup wg's wgmma and records the read
// (block epoch, reader warps), so that a bulk copy over it before the next barrier is caught.
std::string read_operand(Launch& l, int wg, uint32_t addr, float& out, const char* which) {
  const uint32_t a = swizzle128(addr);
  if (uint64_t(a) + 2 > l.smem_bytes)
    return fmt::format(
        "wgmma {} element at shared address {} is past the {} bytes of dynamic "
        "shared memory",
        which, a, l.smem_bytes);
  if (l.meta[a].in_flight > 0 || l.meta[a + 1].in_flight > 0)
    return fmt::format(
        "wgmma reads shared byte {} ({}) while a copy to it is still in flight "
        "(no wait retired it)",
        a, which);
  out = bf16_bits_to_float(load_bf16_bits(a));
  for (uint32_t b = a; b < a + 2; ++b) {
    ByteMeta& m = l.meta[b];
    if (m.read_epoch != l.epoch) {
      m.read_epoch = l.epoch;
      m.reader_warps = 0;
    }
    m.reader_warps |= 0xfu << unsigned(4 * wg);
  }
  return {};
}

std::string perform(Launch& l, int wg, const WgmmaOp& op) {
  const WgmmaArgs& x = op.args;
  const int n = x.n;
  std::vector<float> a(64 * 16), b(16 * size_t(n));
  if (x.a_in_regs) {
    for (int t = 0; t < 128; ++t) {
      const int w = t / 32, g = (t % 32) / 4, q = t % 4;
      const int rows[4] = {16 * w + g, 16 * w + g + 8, 16 * w + g, 16 * w + g + 8};
      const int cols[4] = {2 * q, 2 * q, 2 * q + 8, 2 * q + 8};
      for (int i = 0; i < 4; ++i) {
        a[size_t(rows[i] * 16 + cols[i])] = bf16_bits_to_float(op.a_frag[t][i] & 0xffffu);
        a[size_t(rows[i] * 16 + cols[i] + 1)] = bf16_bits_to_float(op.a_frag[t][i] >> 16);
      }
    }
  } else {
    const Desc da = decode(x.desc_a);
    for (int r = 0; r < 64; ++r)
      for (int k = 0; k < 16; ++k) {
        std::string e = read_operand(l, wg, kmajor_addr(da, r, k), a[size_t(r * 16 + k)], "A");
        if (!e.empty()) return e;
      }
  }
  const Desc db = decode(x.desc_b);
  for (int k = 0; k < 16; ++k)
    for (int c = 0; c < n; ++c) {
      const uint32_t addr = x.trans_b ? nmajor_addr(db, k, c) : kmajor_addr(db, c, k);
      std::string e = read_operand(l, wg, addr, b[size_t(k * n + c)], "B");
      if (!e.empty()) return e;
    }
  for (int t = 0; t < 128; ++t) {
    const int w = t / 32, g = (t % 32) / 4, q = t % 4;
    for (int i = 0; i < n / 2; ++i) {
      const int row = 16 * w + g + 8 * ((i % 4) / 2), col = 8 * (i / 4) + 2 * q + (i % 2);
      float acc = x.scale_d ? op.d[t][i] : 0.0f;
      for (int k = 0; k < 16; ++k) acc += a[size_t(row * 16 + k)] * b[size_t(k * n + col)];
      op.d[t][i] = acc;
    }
  }
  return {};
}

// Builds the warpgroup's op from its 128 threads' arguments.
std::string gather_mma(Fiber* th, WgmmaOp& op) {
  const WgmmaArgs& x0 = th[0].wgmma;
  for (int t = 1; t < 128; ++t) {
    const WgmmaArgs& x = th[t].wgmma;
    if (x.desc_a != x0.desc_a || x.desc_b != x0.desc_b || x.n != x0.n || x.scale_d != x0.scale_d ||
        x.trans_b != x0.trans_b || x.a_in_regs != x0.a_in_regs)
      return fmt::format(
          "wgmma operands differ between threads 0 and {} of the warpgroup "
          "(descriptors, N and flags must be uniform)",
          t);
  }
  if (x0.n < 8 || x0.n > 256 || x0.n % 8 != 0)
    return fmt::format("wgmma N {} (must be 8..256 in steps of 8)", x0.n);
  op.args = x0;
  op.lo = UINT32_MAX;
  op.hi = 0;
  for (int t = 0; t < 128; ++t) {
    op.d[t] = th[t].wgmma.d;
    std::memcpy(op.a_frag[t], th[t].wgmma.a, sizeof(op.a_frag[t]));
  }
  if (!x0.a_in_regs) {
    const Desc da = decode(x0.desc_a);
    std::string e = check_desc(da, "A");
    if (!e.empty()) return e;
    extend_footprint(op.lo, op.hi, kmajor_addr(da, 0, 0), kmajor_addr(da, 63, 15) + 1);
  }
  const Desc db = decode(x0.desc_b);
  std::string e = check_desc(db, "B");
  if (!e.empty()) return e;
  if (x0.trans_b)
    extend_footprint(op.lo, op.hi, nmajor_addr(db, 0, 0), nmajor_addr(db, 15, x0.n - 1) + 1);
  else
    extend_footprint(op.lo, op.hi, kmajor_addr(db, 0, 0), kmajor_addr(db, x0.n - 1, 15) + 1);
  return {};
}

void land(Launch& l, Mbarrier& bar, const BulkCopy& c) {
  const EmuTensorMap& m = c.map;
  uint32_t off = 0;
  for (uint32_t i2 = 0; i2 < (m.rank > 2 ? m.box[2] : 1); ++i2)
    for (uint32_t i1 = 0; i1 < (m.rank > 1 ? m.box[1] : 1); ++i1)
      for (uint32_t i0 = 0; i0 < m.box[0]; ++i0, off += 2) {
        const int64_t idx[3] = {int64_t(c.coords[0]) + i0, int64_t(c.coords[1]) + i1,
                                int64_t(c.coords[2]) + i2};
        bool inside = true;
        const unsigned char* src = m.base;
        for (uint32_t d = 0; d < m.rank; ++d) {
          inside &= idx[d] >= 0 && uint64_t(idx[d]) < m.dims[d];
          src += idx[d] * int64_t(m.strides[d]);
        }
        const uint32_t dst = m.swizzle_128b ? swizzle128(c.dst + off) : c.dst + off;
        if (inside)
          std::memcpy(g_smem + dst, src, 2);
        else
          std::memset(g_smem + dst, 0, 2);
        for (uint32_t b = dst; b < dst + 2; ++b) {
          ByteMeta& mb = l.meta[b];
          mb.in_flight -= 1;
          mb.writer = c.thread;
          mb.write_epoch = l.epoch;
          mb.write_warp_sync = l.warp_syncs[size_t(c.thread / 32)];
        }
      }
  bar.tx -= off;
}

void complete_phase_if_done(Mbarrier& bar) {
  if (bar.pending == 0 && bar.tx == 0) {
    bar.completed += 1;
    bar.pending = bar.expected;
  }
}

Mbarrier& barrier_at(uint32_t addr, const char* what) {
  Launch& l = L();
  check_shared_range(addr, 8, what);
  auto it = l.mbarriers.find(addr);
  if (it == l.mbarriers.end())
    fail(fmt::format("{} on shared address {}, where no mbarrier was initialized", what, addr));
  return it->second;
}

void arrive(Mbarrier& bar, uint32_t addr) {
  if (bar.pending == 0)
    fail(fmt::format("mbarrier at {}: more arrivals than its count {}", addr, bar.expected));
  bar.pending -= 1;
  complete_phase_if_done(bar);
}

}  // namespace

const char* group_op_name(GroupOp op) {
  switch (op) {
    case GroupOp::Fence:
      return "wgmma.fence";
    case GroupOp::Mma:
      return "wgmma.mma_async";
    case GroupOp::Commit:
      return "wgmma.commit_group";
    case GroupOp::Wait:
      return "wgmma.wait_group";
  }
  return "?";
}

void reset_async_state(Launch& l) {
  for (WarpgroupAsync& w : l.warpgroups) {
    w.open.clear();
    w.committed.clear();
  }
  l.mbarriers.clear();
}

bool resolve_warpgroup(Launch& l, int warpgroup) {
  Fiber* th = &l.fibers[size_t(warpgroup) * 128];
  int at_op = 0;
  for (int i = 0; i < 128; ++i) at_op += th[i].state == State::AtGroupOp;
  if (at_op < 128) return false;  // a stall is reported if nothing else can progress
  const GroupOp op = th[0].gop;
  for (int i = 1; i < 128; ++i) {
    if (th[i].gop != op) {
      l.error =
          fmt::format("{}: thread 0 of the warpgroup is at {} but thread {} at {}",
                      where(l, warpgroup * 128), group_op_name(op), i, group_op_name(th[i].gop));
      return false;
    }
  }
  WarpgroupAsync& wa = l.warpgroups[size_t(warpgroup)];
  std::string err;
  switch (op) {
    case GroupOp::Fence:
      break;
    case GroupOp::Mma: {
      WgmmaOp m;
      err = gather_mma(th, m);
      if (err.empty()) {
        wa.open.push_back(m);
        l.stats.wgmma += 1;
        l.stats.wgmma_flops += int64_t(2) * 64 * m.args.n * 16;
      }
      break;
    }
    case GroupOp::Commit:
      wa.committed.push_back(std::move(wa.open));
      wa.open.clear();
      break;
    case GroupOp::Wait: {
      const int allowed = th[0].wgmma.wait_pending;
      while (err.empty() && int(wa.committed.size()) > allowed) {
        for (const WgmmaOp& m : wa.committed.front()) {
          err = perform(l, warpgroup, m);
          if (!err.empty()) break;
        }
        wa.committed.pop_front();
      }
      break;
    }
  }
  if (!err.empty()) {
    l.error = where(l, warpgroup * 128) + ": " + err;
    return false;
  }
  for (int i = 0; i < 128; ++i) th[i].state = State::Running;
  return true;
}

bool resolve_mbarrier_waits(Launch& l) {
  bool progressed = false;
  for (Fiber& f : l.fibers) {
    if (f.state != State::AtMbarrier) continue;
    Mbarrier& bar = l.mbarriers[f.in_u[0]];
    for (const BulkCopy& c : bar.copies) land(l, bar, c);
    bar.copies.clear();
    complete_phase_if_done(bar);
    if ((bar.completed & 1u) != f.in_u[1]) {
      f.state = State::Running;
      progressed = true;
    }
  }
  return progressed;
}

}  // namespace detail

using namespace detail;

void mbarrier_init(uint32_t addr, uint32_t count) {
  Launch& l = L();
  check_shared_range(addr, 8, "mbarrier.init");
  if (count == 0) fail("mbarrier.init with a count of 0");
  Mbarrier& b = l.mbarriers[addr];
  b = Mbarrier{};
  b.expected = b.pending = count;
}

void mbarrier_arrive(uint32_t addr) { arrive(barrier_at(addr, "mbarrier.arrive"), addr); }

void mbarrier_arrive_expect_tx(uint32_t addr, uint32_t tx_bytes) {
  Mbarrier& b = barrier_at(addr, "mbarrier.arrive.expect_tx");
  b.tx += tx_bytes;
  arrive(b, addr);
}

void mbarrier_wait_parity(uint32_t addr, uint32_t parity) {
  barrier_at(addr, "mbarrier.try_wait.parity");
  Fiber& f = self();
  f.in_u[0] = addr;
  f.in_u[1] = parity & 1u;
  block_on(State::AtMbarrier);
}

void bulk_tensor_load(uint32_t dst, const CUtensorMap* map, int rank, const int32_t* coords,
                      uint32_t mbar) {
  Launch& l = L();
  EmuTensorMap m;
  std::memcpy(&m, map, sizeof(m));
  if (m.magic != kMapMagic)
    fail("cp.async.bulk.tensor with a tensor map the emulator did not encode");
  if (int(m.rank) != rank)
    fail(fmt::format("cp.async.bulk.tensor.{}d with a rank-{} tensor map", rank, m.rank));
  const uint32_t bytes = m.box[0] * (rank > 1 ? m.box[1] : 1) * (rank > 2 ? m.box[2] : 1) * 2;
  check_shared_range(dst, 16, "cp.async.bulk.tensor destination");
  if (m.swizzle_128b && dst % 1024 != 0)
    fail(
        fmt::format("cp.async.bulk.tensor destination {} with 128B swizzle is not 1024-byte "
                    "aligned (the emulator's swizzle model needs it)",
                    dst));
  if (uint64_t(dst) + bytes > l.smem_bytes)
    fail(
        fmt::format("cp.async.bulk.tensor writes {} bytes at {}, past the {} bytes of dynamic "
                    "shared memory",
                    bytes, dst, l.smem_bytes));
  Mbarrier& bar = barrier_at(mbar, "cp.async.bulk.tensor completion");
  // Whole rows inside the tensor must lie in registered global memory.
  BulkCopy c{dst, m, {0, 0, 0}, l.current};
  for (int d = 0; d < rank; ++d) c.coords[d] = coords[d];
  for (uint32_t i2 = 0; i2 < (rank > 2 ? m.box[2] : 1); ++i2)
    for (uint32_t i1 = 0; i1 < (rank > 1 ? m.box[1] : 1); ++i1) {
      const int64_t idx1 = int64_t(c.coords[1]) + i1, idx2 = int64_t(c.coords[2]) + i2;
      if ((rank > 1 && (idx1 < 0 || uint64_t(idx1) >= m.dims[1])) ||
          (rank > 2 && (idx2 < 0 || uint64_t(idx2) >= m.dims[2])))
        continue;
      const int64_t first = std::max<int64_t>(c.coords[0], 0);
      const int64_t last = std::min<int64_t>(int64_t(c.coords[0]) + m.box[0], int64_t(m.dims[0]));
      if (first >= last) continue;
      const unsigned char* src = m.base + first * 2 +
                                 (rank > 1 ? idx1 * int64_t(m.strides[1]) : 0) +
                                 (rank > 2 ? idx2 * int64_t(m.strides[2]) : 0);
      check_global_range(src, size_t(last - first) * 2, "cp.async.bulk.tensor");
    }
  // The destination must not be read by a wgmma still in flight.
  for (size_t w = 0; w < l.warpgroups.size(); ++w) {
    auto overlaps = [&](const WgmmaOp& op) { return dst < op.hi && op.lo < dst + bytes; };
    bool hit = std::any_of(l.warpgroups[w].open.begin(), l.warpgroups[w].open.end(), overlaps);
    for (const auto& g : l.warpgroups[w].committed)
      hit |= std::any_of(g.begin(), g.end(), overlaps);
    if (hit)
      fail(
          fmt::format("cp.async.bulk.tensor overwrites shared bytes [{}, {}) that a wgmma of "
                      "warpgroup {} still reads (no wgmma.wait_group retired it)",
                      dst, dst + bytes, w));
  }
  // ... nor have been read by another warpgroup's wgmma since the last block barrier (the
  // barrier is what orders its reads before this copy).
  const uint32_t own = 0xfu << unsigned(4 * (l.current / 128));
  for (uint32_t b = dst; b < dst + bytes; ++b) {
    const ByteMeta& m = l.meta[b];
    if (m.read_epoch == l.epoch && (m.reader_warps & ~own) != 0)
      fail(
          fmt::format("cp.async.bulk.tensor overwrites shared byte {} that warps {:#x} read "
                      "(wgmma) since the last barrier",
                      b, m.reader_warps & ~own));
  }
  for (uint32_t b = dst; b < dst + bytes; ++b) l.meta[b].in_flight += 1;
  l.stats.bulk_copy_bytes += bytes;
  bar.copies.push_back(c);
}

void wgmma_fence() {
  self().gop = GroupOp::Fence;
  block_on(State::AtGroupOp);
}

void wgmma_bf16(float* d, int n, uint64_t desc_a, const uint32_t* a_regs, uint64_t desc_b,
                bool scale_d, bool trans_b) {
  Fiber& f = self();
  if (L().fibers.size() % 128 != 0) fail("wgmma in a block that is not whole warpgroups");
  f.gop = GroupOp::Mma;
  f.wgmma = WgmmaArgs{};
  f.wgmma.desc_a = desc_a;
  f.wgmma.desc_b = desc_b;
  f.wgmma.a_in_regs = a_regs != nullptr;
  if (a_regs != nullptr) std::memcpy(f.wgmma.a, a_regs, sizeof(f.wgmma.a));
  f.wgmma.d = d;
  f.wgmma.n = n;
  f.wgmma.scale_d = scale_d;
  f.wgmma.trans_b = trans_b;
  block_on(State::AtGroupOp);
}

void wgmma_commit() {
  self().gop = GroupOp::Commit;
  block_on(State::AtGroupOp);
}

void wgmma_wait(int pending_allowed) {
  Fiber& f = self();
  f.gop = GroupOp::Wait;
  f.wgmma.wait_pending = pending_allowed;
  block_on(State::AtGroupOp);
}

CUresult tensor_map_encode_tiled(CUtensorMap* map, CUtensorMapDataType type, cuuint32_t rank,
                                 void* base, const cuuint64_t* dims, const cuuint64_t* strides,
                                 const cuuint32_t* box, const cuuint32_t* element_strides,
                                 CUtensorMapInterleave interleave, CUtensorMapSwizzle swizzle,
                                 CUtensorMapL2promotion l2, CUtensorMapFloatOOBfill fill) {
  (void)l2;
  if (map == nullptr || base == nullptr || rank < 1 || rank > 3 ||
      type != CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 || interleave != CU_TENSOR_MAP_INTERLEAVE_NONE ||
      fill != CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE ||
      (swizzle != CU_TENSOR_MAP_SWIZZLE_NONE && swizzle != CU_TENSOR_MAP_SWIZZLE_128B))
    return CUDA_ERROR_INVALID_VALUE;
  if (reinterpret_cast<uintptr_t>(base) % 16 != 0) return CUDA_ERROR_INVALID_VALUE;
  EmuTensorMap m{};
  m.magic = kMapMagic;
  m.base = static_cast<const unsigned char*>(base);
  m.rank = rank;
  m.swizzle_128b = swizzle == CU_TENSOR_MAP_SWIZZLE_128B;
  m.strides[0] = 2;
  for (cuuint32_t d = 0; d < rank; ++d) {
    if (dims[d] == 0 || dims[d] > (uint64_t(1) << 32)) return CUDA_ERROR_INVALID_VALUE;
    if (box[d] == 0 || box[d] > 256 || element_strides[d] != 1) return CUDA_ERROR_INVALID_VALUE;
    m.dims[d] = dims[d];
    m.box[d] = box[d];
    if (d > 0) {
      // The driver's rules: strides multiples of 16 bytes and below 2^40.
      if (strides[d - 1] % 16 != 0 || strides[d - 1] >= (uint64_t(1) << 40))
        return CUDA_ERROR_INVALID_VALUE;
      m.strides[d] = strides[d - 1];
    }
  }
  if ((m.box[0] * 2) % 16 != 0) return CUDA_ERROR_INVALID_VALUE;
  if (m.swizzle_128b && m.box[0] * 2 != 128) return CUDA_ERROR_INVALID_VALUE;  // see header
  std::memset(map, 0, sizeof(*map));
  std::memcpy(map, &m, sizeof(m));
  return CUDA_SUCCESS;
}

}  // namespace ll::cuda::emu
