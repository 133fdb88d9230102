// The work the tensor-core attention kernels do, counted by the SIMT emulator while they run,
// against the work the mask needs, computed here from the mask alone (attn_key_range /
// attn_query_range, pair by pair): S2-Attn does only its segments' work, and no key tile
// outside a query block's segments is loaded.
//
// Units: each warp owns a row group (16 query rows, or 32 for the hd-64 forward; 16 keys in the
// dK/dV kernel) and walks 64-wide tiles of the other side starting at its block's union start.
// A (row group, tile) unit is computed iff the warp's visible range [min first, max last] meets
// the tile. For Dense and S2 those ranges are contiguous per row group, so this is exactly
// "the unit holds at least one visible pair" (checked). Per unit, the matmuls are: forward
// Q K^T and P V, 2 x rows x 64 x hd multiply-adds; dQ: S, dP, dQ, 3 x; dK/dV: S^T, dP^T, dV,
// dK, 4 x; one mma.m16n8k16 is 16 x 8 x 16 of them. Loads: each block copies its own rows once
// and the other side's rows [union start, union end] once, nothing else (bytes by cp.async).
// S2Roll's shifted heads break contiguity only for the rows straddling the roll (rolled index
// N - 1 next to 0): that one row group per head walks its whole range; the excess is reported
// and bounded.
// The Hopper kernels (wgmma, bulk tensor copies) are counted the same way with their own
// geometry: 128-row blocks, 64-row groups (a warpgroup); tiles of the other side 128 keys
// (forward) or 64 rows (dK/dV: queries, dQ: keys); their copies move whole boxes (the block's
// own rows once, the other side's tile rows per tile walked).
#include <doctest/doctest.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "kernels/attention_pattern.h"
#include "kernels/cuda/attention_ranges.h"
#include "tests/kernels/attention_test_cases.h"
#include "tests/kernels/kernel_test_util.h"

#if defined(LL_HAVE_SIMT_EMULATOR)
#include "tests/cuda_emu/attention_tc_emulated.h"

namespace {

namespace emu = ll::cuda::emu;
using Case = ll::test::AttnCase;

constexpr int64_t kTile = 64;  // mma.sync kernels: keys (queries) per tile of the other side

struct Work {
  int64_t units = 0;       // (row group, tile) units the kernel's rule computes
  int64_t needed = 0;      // units holding at least one visible pair
  int64_t other_rows = 0;  // rows of the other side loaded (sum of union lengths)
  int64_t own_rows = 0;    // own rows loaded
  int64_t tiles = 0;       // tiles of the other side a block walks (summed over blocks, heads)
};

// Visible [first, last] (visit indices of the other side) of own row `r` of head `head`.
using RangeOf = ll::KeyRange (*)(const ll::AttentionPattern&, int64_t head, int64_t r);
ll::KeyRange key_side(const ll::AttentionPattern& m, int64_t head, int64_t i) {
  return ll::attn_key_range(m, head, i);
}
ll::KeyRange query_side(const ll::AttentionPattern& m, int64_t head, int64_t j) {
  const ll::QueryRange q = ll::attn_query_range(m, head, j);
  return {q.first, q.last};
}

// Blocks of `block_rows` own rows (positions), warps of `warp_rows`; `heads` lists the heads
// one block serves (its union spans all of them per head, loaded per head).
void count_blocks(const ll::AttentionPattern& m, const std::vector<int64_t>& heads,
                  int64_t block_rows, int64_t warp_rows, RangeOf range_of, Work& w,
                  int64_t tile = kTile) {
  const int64_t n = m.seq_len;
  for (int64_t r0 = 0; r0 < n; r0 += block_rows) {
    const int64_t r1 = std::min(n, r0 + block_rows);
    w.own_rows += r1 - r0;
    for (int64_t head : heads) {
      int64_t lo = INT64_MAX, hi = INT64_MIN;
      for (int64_t r = r0; r < r1; ++r) {
        const ll::KeyRange kr = range_of(m, head, r);
        lo = std::min(lo, kr.first);
        hi = std::max(hi, kr.last);
      }
      w.other_rows += hi - lo + 1;
      w.tiles += (hi - lo) / tile + 1;
      for (int64_t g0 = r0; g0 < r1; g0 += warp_rows) {
        const int64_t g1 = std::min(r1, g0 + warp_rows);
        int64_t f = INT64_MAX, l = INT64_MIN;
        for (int64_t r = g0; r < g1; ++r) {
          const ll::KeyRange kr = range_of(m, head, r);
          f = std::min(f, kr.first);
          l = std::max(l, kr.last);
        }
        for (int64_t v0 = lo; v0 <= hi; v0 += tile) {
          const int64_t v1 = v0 + tile - 1;
          w.units += !(v0 > l || v1 < f);
          bool any = false;
          for (int64_t r = g0; r < g1 && !any; ++r) {
            const ll::KeyRange kr = range_of(m, head, r);
            any = kr.first <= v1 && kr.last >= v0;
          }
          w.needed += any;
        }
      }
    }
  }
}

std::vector<int64_t> one_head(int64_t h) { return {h}; }
std::vector<int64_t> group_of(int64_t hk, int64_t group) {
  std::vector<int64_t> hs;
  for (int64_t g = 0; g < group; ++g) hs.push_back(hk * group + g);
  return hs;
}

const emu::LaunchStats& stats_of(const std::vector<emu::KernelRun>& runs, const char* kernel) {
  for (const emu::KernelRun& r : runs)
    if (r.kernel == kernel) return r.stats;
  FAIL("no launch of " << kernel);
  return runs.front().stats;
}

// Units the kernel's rule computes but that hold no visible pair must not exist for Dense and
// S2; for S2Roll at most one row group per shifted head walks extra tiles (its whole range).
void check_rule(const Case& c, const Work& w, const std::string& what) {
  INFO(what << ": units " << w.units << ", needed " << w.needed);
  if (c.mode != ll::AttnMode::S2Roll) {
    CHECK(w.units == w.needed);
  } else {
    CHECK(w.units >= w.needed);
    CHECK(w.units - w.needed <= (c.h / 2) * (c.n / kTile + 1) * 4);
    MESSAGE(what << ": S2Roll computes " << w.units - w.needed
                 << " units with no visible pair (the row groups straddling the roll)");
  }
}

struct Totals {
  int64_t mma = 0, bytes = 0;
};

Totals run_and_count(const Case& c) {
  INFO("mode " << std::string(ll::test::mode_name(c.mode)) << " N " << c.n << " H " << c.h
               << " Hkv " << c.hkv << " hd " << c.hd << " G " << c.g);
  const ll::AttentionPattern mask = ll::test::mask_of(c);
  const size_t nq = size_t(c.n * c.h * c.hd), nkv = size_t(c.n * c.hkv * c.hd);
  std::mt19937_64 rng(uint64_t(c.n * 31 + c.hd));
  auto bits = [&](size_t count) {
    emu::Bf16Bits b(count);
    for (uint16_t& x : b) x = uint16_t(0x3c00u + rng() % 0x200u);  // about 0.0078 .. 0.03
    return b;
  };
  const emu::Bf16Bits q = bits(nq), k = bits(nkv), v = bits(nkv), dout = bits(nq);
  const int64_t row_bytes = c.hd * 2;
  Totals t;

  // Forward: blocks of 64 (hd 128) or 128 (hd 64) query rows per head, 4 warps.
  const emu::ForwardResult f =
      emu::attention_forward_tc_emulated(q, k, v, c.n, c.h, c.hkv, c.hd, mask);
  {
    const int64_t bq = c.hd == 128 ? 64 : 128, warp_rows = bq / 4;
    Work w;
    for (int64_t h = 0; h < c.h; ++h) count_blocks(mask, one_head(h), bq, warp_rows, key_side, w);
    check_rule(c, w, "forward");
    const emu::LaunchStats& s = stats_of(f.launches, "attention_forward_tc_kernel");
    // 2 * warp_rows * 64 * hd multiply-adds per unit, 2048 per mma.
    CHECK(s.mma == w.units * 2 * warp_rows * kTile * c.hd / 2048);
    // Per head: own rows (Q) once, other rows (K and V) once.
    CHECK(s.cp_async_bytes == (w.own_rows + 2 * w.other_rows) * row_bytes);
    t.mma += s.mma;
    t.bytes += s.cp_async_bytes;
  }

  // Backward on the emulated forward's out and lse.
  const emu::BackwardResult b =
      emu::attention_backward_tc_emulated(dout, q, k, v, f.out, f.lse, c.n, c.h, c.hkv, c.hd, mask);
  {
    Work w;
    const int64_t group = c.h / c.hkv;
    for (int64_t hk = 0; hk < c.hkv; ++hk)
      count_blocks(mask, group_of(hk, group), kTile, 16, query_side, w);
    check_rule(c, w, "dK/dV");
    const emu::LaunchStats& s = stats_of(b.launches, "attention_backward_tc_dkv_kernel");
    CHECK(s.mma == w.units * 4 * 16 * kTile * c.hd / 2048);
    // K and V of its keys once; Q and dO of each head's union once.
    CHECK(s.cp_async_bytes == (2 * w.own_rows + 2 * w.other_rows) * row_bytes);
    t.mma += s.mma;
    t.bytes += s.cp_async_bytes;
  }
  {
    Work w;
    for (int64_t h = 0; h < c.h; ++h) count_blocks(mask, one_head(h), kTile, 16, key_side, w);
    check_rule(c, w, "dQ");
    const emu::LaunchStats& s = stats_of(b.launches, "attention_backward_tc_dq_kernel");
    CHECK(s.mma == w.units * 3 * 16 * kTile * c.hd / 2048);
    CHECK(s.cp_async_bytes == (2 * w.own_rows + 2 * w.other_rows) * row_bytes);
    t.mma += s.mma;
    t.bytes += s.cp_async_bytes;
  }
  CHECK(stats_of(b.launches, "attention_tc_rowdot_kernel").mma == 0);
  return t;
}

// The Hopper forward and backward: wgmma FLOPs and bulk-copy bytes against the mask-derived
// units; returns the FLOPs of all three kernels.
int64_t run_and_count_sm90(const Case& c) {
  INFO("Hopper forward: mode " << std::string(ll::test::mode_name(c.mode)) << " N " << c.n << " H "
                               << c.h << " Hkv " << c.hkv << " hd " << c.hd << " G " << c.g);
  const ll::AttentionPattern mask = ll::test::mask_of(c);
  const size_t nq = size_t(c.n * c.h * c.hd), nkv = size_t(c.n * c.hkv * c.hd);
  const emu::Bf16Bits q(nq, 0x3c00), k(nkv, 0x3c00), v(nkv, 0x3c00);  // values do not matter
  const emu::ForwardResult f =
      emu::attention_forward_sm90_emulated(q, k, v, c.n, c.h, c.hkv, c.hd, mask);
  constexpr int64_t kBlockRows = 128, kGroupRows = 64, kKeyTile = 128;
  Work w;
  for (int64_t h = 0; h < c.h; ++h)
    count_blocks(mask, one_head(h), kBlockRows, kGroupRows, key_side, w, kKeyTile);
  check_rule(c, w, "Hopper forward");
  const emu::LaunchStats& s = stats_of(f.launches, "attention_forward_sm90_kernel");
  // Per unit: S = Q K^T and O += P V, 2 x 64 x 128 x hd multiply-adds each.
  CHECK(s.wgmma_flops == w.units * 4 * kGroupRows * kKeyTile * c.hd);
  CHECK(s.mma == 0);
  // Per block and head: a 128-row Q box, then a K and a V box per tile walked.
  const int64_t blocks = (c.n + kBlockRows - 1) / kBlockRows * c.h;
  CHECK(s.bulk_copy_bytes == (blocks + 2 * w.tiles) * kBlockRows * c.hd * 2);
  CHECK(s.cp_async_bytes == 0);
  int64_t flops = s.wgmma_flops;
  int64_t atomic_flops = 0;  // the atomic-dQ backward's

  const emu::Bf16Bits dout(nq, 0x3c00);
  const emu::BackwardResult b = emu::attention_backward_sm90_emulated(dout, q, k, v, f.out, f.lse,
                                                                      c.n, c.h, c.hkv, c.hd, mask);
  constexpr int64_t kTile64 = 64;
  const int64_t row_bytes = c.hd * 2, blocks_kv = (c.n + kBlockRows - 1) / kBlockRows;
  {
    Work wk;
    const int64_t group = c.h / c.hkv;
    for (int64_t hk = 0; hk < c.hkv; ++hk)
      count_blocks(mask, group_of(hk, group), kBlockRows, kGroupRows, query_side, wk, kTile64);
    check_rule(c, wk, "Hopper dK/dV");
    const emu::LaunchStats& st = stats_of(b.launches, "attention_backward_sm90_dkv_kernel");
    // S^T, dP^T, dV, dK: 4 x 2 x 64 x 64 x hd per unit.
    CHECK(st.wgmma_flops == wk.units * 8 * kGroupRows * kTile64 * c.hd);
    // K and V boxes of 128 rows per block; Q and dO boxes of 64 rows per tile walked.
    CHECK(st.bulk_copy_bytes ==
          (2 * blocks_kv * c.hkv * kBlockRows + 2 * wk.tiles * kTile64) * row_bytes);
    flops += st.wgmma_flops;

    // Atomic dQ: the same kernel with dQ = dS K per tile added; no dQ kernel. hd 128: each
    // warpgroup 64 queries x 64 columns over all 128 keys of every tile walked; hd 64: each
    // warpgroup that does not skip the tile, 64 x 64 over its own 64 keys.
    const emu::BackwardResult ba = emu::attention_backward_sm90_emulated(
        dout, q, k, v, f.out, f.lse, c.n, c.h, c.hkv, c.hd, mask, true);
    const emu::LaunchStats& sa =
        stats_of(ba.launches, "attention_backward_sm90_dkv_kernel<atomic dQ>");
    const int64_t dq_flops = c.hd == 128 ? wk.tiles * 2 * kTile64 * kBlockRows * c.hd
                                         : wk.units * 2 * kGroupRows * kTile64 * c.hd;
    CHECK(sa.wgmma_flops == st.wgmma_flops + dq_flops);
    CHECK(sa.bulk_copy_bytes == st.bulk_copy_bytes);
    CHECK(ba.launches.size() == 4);  // rowdot, zero, dK/dV/dQ, convert
    atomic_flops = sa.wgmma_flops;
  }
  {
    Work wq;
    for (int64_t h = 0; h < c.h; ++h)
      count_blocks(mask, one_head(h), kBlockRows, kGroupRows, key_side, wq, kTile64);
    check_rule(c, wq, "Hopper dQ");
    const emu::LaunchStats& st = stats_of(b.launches, "attention_backward_sm90_dq_kernel");
    // S, dP, dQ: 3 x 2 x 64 x 64 x hd per unit.
    CHECK(st.wgmma_flops == wq.units * 6 * kGroupRows * kTile64 * c.hd);
    CHECK(st.bulk_copy_bytes == (2 * blocks * kBlockRows + 2 * wq.tiles * kTile64) * row_bytes);
    flops += st.wgmma_flops;
  }
  CHECK(stats_of(b.launches, "attention_tc_rowdot_kernel").wgmma == 0);
  MESSAGE("Hopper forward + backward, mode " << std::string(ll::test::mode_name(c.mode)) << " N "
                                             << c.n << " hd " << c.hd << ": wgmma FLOPs " << flops
                                             << " deterministic, " << s.wgmma_flops + atomic_flops
                                             << " atomic dQ");
  return flops;
}

}  // namespace
#endif

TEST_CASE("the Hopper attention kernels do exactly the work the S2-Attn segments need") {
#if defined(LL_HAVE_SIMT_EMULATOR)
  for (int64_t hd : {64, 128}) {
    const int64_t dense = run_and_count_sm90(Case{ll::AttnMode::Dense, 1024, 2, 1, hd, 0});
    const int64_t s2 = run_and_count_sm90(Case{ll::AttnMode::S2, 1024, 2, 1, hd, 256});
    const double ratio = double(dense) / double(s2);
    MESSAGE("Hopper forward + backward, hd " << hd << ", N 1024, G 256: wgmma FLOPs dense " << dense
                                             << ", S2 " << s2 << " (" << ratio << "x less)");
    CHECK(ratio > 2.5);
  }
  run_and_count_sm90(Case{ll::AttnMode::S2, 456, 4, 2, 128, 112});  // GQA, ragged segments
  run_and_count_sm90(Case{ll::AttnMode::S2, 300, 2, 2, 64, 16});    // G far below the tile
#else
  std::printf("SKIP: built without the CUDA toolkit\n");
  std::exit(77);
#endif
}

TEST_CASE("tensor-core attention kernels do exactly the work the S2-Attn segments need") {
#if defined(LL_HAVE_SIMT_EMULATOR)
  const int64_t n = 512, g = 128;  // G = N/4
  for (int64_t hd : {64, 128}) {
    INFO("hd " << hd);
    const Totals dense = run_and_count(Case{ll::AttnMode::Dense, n, 2, 1, hd, 0});
    const Totals s2 = run_and_count(Case{ll::AttnMode::S2, n, 2, 1, hd, g});
    // Visible pairs: dense 131328, S2 (one head per half) 33088 + 24896; tile granularity
    // (64-wide tiles, 16-row groups on the diagonal) keeps the ratio below the ideal 4x.
    const double ratio = double(dense.mma) / double(s2.mma);
    MESSAGE("hd " << hd << ": mma instructions, forward + backward: dense " << dense.mma << ", S2 "
                  << s2.mma << " (" << ratio << "x less); cp.async bytes: dense " << dense.bytes
                  << ", S2 " << s2.bytes);
    CHECK(ratio > 2.5);
  }
  // GQA (the dK/dV block serves both query heads of its kv head), ragged segments, S2Roll.
  run_and_count(Case{ll::AttnMode::S2, 456, 4, 2, 128, 112});
  run_and_count(Case{ll::AttnMode::S2Roll, 456, 4, 2, 64, 112});
#else
  std::printf(
      "SKIP: built without the CUDA toolkit (the emulator compiles the CUDA kernels' "
      "source with its headers)\n");
  std::exit(77);
#endif
}
