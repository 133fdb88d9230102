// kernels/attention_schedule.h (tile schedule of the tiled attention kernels, work counts)
// against brute force over kernels/attention_pattern.h: the tiles the scheduler visits are exactly
// the tiles holding visible (query, key) pairs, the fast-path flag is exact, the backward's query
// tiles are the transpose, and the counts match closed forms (S2 tiles, pairs, FLOPs).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/attention_pattern.h"
#include "kernels/attention_schedule.h"
#include "kernels/cuda/attention_ranges.h"

namespace {

using ll::AttentionPattern;
using ll::AttnMode;
using ll::TileRange;

// Visible pairs per (query tile, key tile), [nq, nk] row-major, from the per-query key ranges
// of attn_key_range alone (query visit u is position attn_query_of_visit(u)).
struct TileCounts {
  int64_t nq = 0, nk = 0;
  std::vector<int64_t> c;
  int64_t at(int64_t q, int64_t k) const { return c[size_t(q * nk + k)]; }
};

TileCounts tile_counts(const AttentionPattern& m, int64_t head, int64_t bq, int64_t bk) {
  TileCounts t;
  t.nq = (m.seq_len + bq - 1) / bq;
  t.nk = (m.seq_len + bk - 1) / bk;
  t.c.assign(size_t(t.nq * t.nk), 0);
  for (int64_t u = 0; u < m.seq_len; ++u) {
    const ll::KeyRange r = ll::attn_key_range(m, head, ll::attn_query_of_visit(m, head, u));
    for (int64_t k = r.first / bk; k <= r.last / bk; ++k) {
      const int64_t lo = std::max(r.first, k * bk), hi = std::min(r.last, k * bk + bk - 1);
      t.c[size_t((u / bq) * t.nk + k)] += hi - lo + 1;
    }
  }
  return t;
}

// The same counts pair by pair over positions (i, j), for small N: cross-checks tile_counts.
TileCounts tile_counts_pairwise(const AttentionPattern& m, int64_t head, int64_t bq, int64_t bk) {
  TileCounts t;
  t.nq = (m.seq_len + bq - 1) / bq;
  t.nk = (m.seq_len + bk - 1) / bk;
  t.c.assign(size_t(t.nq * t.nk), 0);
  for (int64_t i = 0; i < m.seq_len; ++i) {
    const ll::KeyRange r = ll::attn_key_range(m, head, i);
    const int64_t u = ll::attn_visit_of_key(m, head, i);  // query visit index of position i
    for (int64_t j = 0; j < m.seq_len; ++j) {
      const int64_t v = ll::attn_visit_of_key(m, head, j);
      if (r.first <= v && v <= r.last) ++t.c[size_t((u / bq) * t.nk + v / bk)];
    }
  }
  return t;
}

struct Stats {
  int64_t configs = 0, visited = 0, masked = 0;
};

std::string describe(const AttentionPattern& m, int64_t head, int64_t bq, int64_t bk) {
  std::ostringstream s;
  s << "mode " << int(m.mode) << " N " << m.seq_len << " G " << m.group_size << " H " << m.n_heads
    << " head " << head << " bq " << bq << " bk " << bk;
  return s.str();
}

// All the schedule's claims for one configuration, against the brute-force tile counts.
void check_schedule(const AttentionPattern& m, int64_t head, int64_t bq, int64_t bk, Stats& stats,
                    bool pairwise) {
  const TileCounts t = tile_counts(m, head, bq, bk);
  if (pairwise) {
    const TileCounts p = tile_counts_pairwise(m, head, bq, bk);
    REQUIRE_MESSAGE(p.c == t.c, describe(m, head, bq, bk));
  }
  int64_t pairs = 0, nonzero = 0;
  std::string err;
  for (int64_t q = 0; q < t.nq && err.empty(); ++q) {
    const TileRange kr = ll::attn_key_tiles(m, head, q, bq, bk);
    if (kr.first > kr.last || kr.first < 0 || kr.last >= t.nk) {
      err = "key tile range out of bounds";
      break;
    }
    for (int64_t k = 0; k < t.nk; ++k) {
      const int64_t c = t.at(q, k);
      pairs += c;
      nonzero += c > 0;
      const bool visited = kr.first <= k && k <= kr.last;
      // (a) completeness (c > 0 => visited) and minimality (visited => c > 0).
      if (visited != (c > 0)) err = "visited " + std::to_string(visited);
      // (b) the fast path exactly when all bq * bk pairs are in range and visible.
      const bool mask = ll::attn_key_tile_needs_mask(m, head, q, k, bq, bk);
      if (mask != (c != bq * bk)) err = "needs_mask " + std::to_string(mask);
      if (visited) {
        ++stats.visited;
        stats.masked += mask;
      }
      if (!err.empty()) {
        err += " for q tile " + std::to_string(q) + " k tile " + std::to_string(k) + " holding " +
               std::to_string(c) + " visible pairs";
        break;
      }
    }
  }
  // (f) the backward's query tiles are the transpose.
  for (int64_t k = 0; k < t.nk && err.empty(); ++k) {
    const TileRange qr = ll::attn_query_tiles(m, head, k, bq, bk);
    if (qr.first > qr.last || qr.first < 0 || qr.last >= t.nq) {
      err = "query tile range out of bounds for k tile " + std::to_string(k);
      break;
    }
    for (int64_t q = 0; q < t.nq; ++q) {
      if ((qr.first <= q && q <= qr.last) != (t.at(q, k) > 0)) {
        err = "query tiles of k tile " + std::to_string(k) + " disagree at q tile " +
              std::to_string(q);
        break;
      }
    }
  }
  if (!err.empty()) FAIL(describe(m, head, bq, bk) << ": " << err);
  // (c) closed-form visible pairs; tiles visited = tiles holding a visible pair.
  CHECK_MESSAGE(ll::attn_visible_pairs(m, head) == pairs, describe(m, head, bq, bk));
  CHECK_MESSAGE(ll::attn_tiles_visited(m, head, bq, bk) == nonzero, describe(m, head, bq, bk));
  // Out-of-range tiles are empty.
  const TileRange past_q = ll::attn_key_tiles(m, head, t.nq, bq, bk);
  const TileRange past_k = ll::attn_query_tiles(m, head, t.nk, bq, bk);
  CHECK(past_q.first > past_q.last);
  CHECK(past_k.first > past_k.last);
  ++stats.configs;
}

// The (mode, G) combinations of a sweep: Dense once, S2 and S2Roll for every G.
template <class Fn>
void for_each_mask(int64_t n, const std::vector<int64_t>& groups, Fn fn) {
  const int64_t heads = 4;  // heads 0, 1 unshifted; 2, 3 shifted
  fn(AttentionPattern{AttnMode::Dense, n, 2, heads}, int64_t{0});
  for (AttnMode mode : {AttnMode::S2, AttnMode::S2Roll})
    for (int64_t g : groups)
      for (int64_t head : {int64_t{0}, heads - 1}) fn(AttentionPattern{mode, n, g, heads}, head);
}

TEST_CASE("schedule is exact for every small N, G and tile shape (pairwise brute force)") {
  Stats stats;
  const int64_t tiles[] = {1, 2, 3, 8, 16};
  for (int64_t n = 1; n <= 64; ++n) {
    std::vector<int64_t> groups;
    for (int64_t g = 2; g <= 2 * n + 4; g += 2) groups.push_back(g);
    for_each_mask(n, groups, [&](const AttentionPattern& m, int64_t head) {
      for (int64_t bq : tiles)
        for (int64_t bk : tiles) check_schedule(m, head, bq, bk, stats, /*pairwise=*/true);
    });
  }
  MESSAGE("small sweep: " << stats.configs << " configurations, " << stats.visited
                          << " tiles visited, " << stats.masked << " needing the mask");
  CHECK(stats.configs > 200000);
}

TEST_CASE("schedule is exact for N up to a few thousand, tiles 16..128, bq != bk") {
  Stats stats;
  const int64_t tiles[] = {16, 32, 64, 128};
  const int64_t sizes[] = {1,   2,   15,  16,   17,   100,  127,  128,
                           129, 255, 640, 1000, 1024, 1537, 2048, 3000};
  for (int64_t n : sizes) {
    const auto even = [](int64_t x) { return std::max<int64_t>(2, x - x % 2); };
    std::set<int64_t> gs = {
        2,   6,           16,          30,          64,      128,           250,
        256, even(n / 4), even(n / 3), even(n / 2), even(n), n + 2 - n % 2, 2 * n + 2};
    const std::vector<int64_t> groups(gs.begin(), gs.end());
    for_each_mask(n, groups, [&](const AttentionPattern& m, int64_t head) {
      for (int64_t bq : tiles)
        for (int64_t bk : tiles) check_schedule(m, head, bq, bk, stats, /*pairwise=*/n <= 129);
    });
  }
  MESSAGE("large sweep: " << stats.configs << " configurations, " << stats.visited
                          << " tiles visited, " << stats.masked << " needing the mask ("
                          << 100.0 * double(stats.masked) / double(stats.visited) << "%)");
  CHECK(stats.configs > 5000);
}

// Tiles visited by one S2 head with G | N, bq = bk = b | G (t = G / b tiles per segment).
int64_t s2_tiles_closed_form(int64_t n, int64_t g, int64_t b, bool shifted) {
  const int64_t k = n / g, t = g / b;
  const auto tri = [](int64_t x) { return x * (x + 1) / 2; };
  if (!shifted) return k * tri(t);  // each segment: a causal triangle of t x t tiles
  if (t % 2 == 0) return 2 * tri(t / 2) + (k - 1) * tri(t);  // G/2 segments at both ends
  // t odd: every boundary G/2 + jG cuts a tile in half. Within a middle segment the query
  // tiles see 2, 3, ..., t + 1 key tiles (the tile cut at its start reaches back one tile);
  // the first segment's tiles see 1..h, the last segment's 2..h, h = (t + 1) / 2.
  const int64_t h = (t + 1) / 2;
  return 2 * tri(h) - 1 + (k - 1) * (tri(t + 1) - 1);
}

TEST_CASE("S2 with G | N and bq = bk | G: tiles visited match the per-segment closed form") {
  for (int64_t b : {16, 32, 64, 128})
    for (int64_t t : {1, 2, 3, 4, 5, 6, 8})
      for (int64_t k : {1, 2, 3, 5}) {
        const int64_t g = t * b, n = k * g;
        const AttentionPattern m{AttnMode::S2, n, g, 8};
        CAPTURE(b);
        CAPTURE(g);
        CAPTURE(n);
        CHECK(ll::attn_tiles_visited(m, 0, b, b) == s2_tiles_closed_form(n, g, b, false));
        CHECK(ll::attn_tiles_visited(m, 7, b, b) == s2_tiles_closed_form(n, g, b, true));
        const auto tri = [](int64_t x) { return x * (x + 1) / 2; };
        CHECK(ll::attn_visible_pairs(m, 0) == k * tri(g));
        CHECK(ll::attn_visible_pairs(m, 7) == 2 * tri(g / 2) + (k - 1) * tri(g));
        // S2Roll does the unshifted half's work in both halves (in rolled order).
        const AttentionPattern roll{AttnMode::S2Roll, n, g, 8};
        CHECK(ll::attn_tiles_visited(roll, 7, b, b) == s2_tiles_closed_form(n, g, b, false));
      }
}

TEST_CASE("S2 at N = 32768, G = N/4 visits about a quarter of the dense tiles (15/64)") {
  // Per head pair (one unshifted, one shifted) with T = N/b tiles, t = T/4 per segment:
  //   dense 2 * T(T+1)/2;  S2 4 t(t+1)/2 + [2 (t/2)(t/2+1)/2 + 3 t(t+1)/2]
  // -> (4 + 2/4 + 3) t^2 / (2 * 16 t^2) = 15/64 as b/G -> 0 (the shifted half does 7/8 of the
  // unshifted half's work: its two end segments are half size).
  const int64_t n = 32768, g = n / 4;
  const AttentionPattern s2{AttnMode::S2, n, g, 2}, dense{AttnMode::Dense, n, 2, 2};
  const auto tri = [](int64_t x) { return x * (x + 1) / 2; };
  for (int64_t b : {64, 128}) {
    const int64_t big_t = n / b, t = big_t / 4;
    const int64_t s2_tiles =
        ll::attn_tiles_visited(s2, 0, b, b) + ll::attn_tiles_visited(s2, 1, b, b);
    const int64_t dense_tiles = 2 * ll::attn_tiles_visited(dense, 0, b, b);
    CHECK(dense_tiles == 2 * tri(big_t));
    CHECK(s2_tiles == 7 * tri(t) + 2 * tri(t / 2));
    const double ratio = double(s2_tiles) / double(dense_tiles);
    MESSAGE("b " << b << ": S2 / dense tiles " << ratio);
    CHECK(std::fabs(ratio / (15.0 / 64.0) - 1.0) < 0.02);
  }
  // bq != bk: same ratio within a few percent.
  const int64_t s2_tiles =
      ll::attn_tiles_visited(s2, 0, 128, 64) + ll::attn_tiles_visited(s2, 1, 128, 64);
  const double ratio = double(s2_tiles) / double(2 * ll::attn_tiles_visited(dense, 0, 128, 64));
  CHECK(std::fabs(ratio / (15.0 / 64.0) - 1.0) < 0.03);
  // Pairs: the exact work ratio is (4 tri(G) + 2 tri(G/2) + 3 tri(G)) / (2 tri(N)).
  const int64_t s2_pairs = ll::attn_visible_pairs(s2, 0) + ll::attn_visible_pairs(s2, 1);
  CHECK(s2_pairs == 7 * tri(g) + 2 * tri(g / 2));
  CHECK(std::fabs(double(s2_pairs) / double(2 * tri(n)) / (15.0 / 64.0) - 1.0) < 0.001);
}

TEST_CASE("attn_flops follows DESIGN.md section 6 with exact visible pairs") {
  const int64_t n = 4096, d = 128, h = 32;
  const AttentionPattern dense{AttnMode::Dense, n, 2, h};
  // "4 N^2 D H, halved for causal" plus the diagonal's 2 N D H.
  CHECK(ll::attn_flops(dense, h, d, false) == 2 * n * n * d * h + 2 * n * d * h);
  CHECK(ll::attn_flops(dense, h, d, true) * 2 == 5 * ll::attn_flops(dense, h, d, false));
  const AttentionPattern s2{AttnMode::S2, n, n / 4, h};
  const int64_t fwd = ll::attn_flops(s2, h, d, false);
  const int64_t pairs = ll::attn_visible_pairs(s2, 0) + ll::attn_visible_pairs(s2, h - 1);
  CHECK(fwd == 4 * d * (h / 2) * pairs);
  // Against the design's "N * G, halved" (4 * N * G / 2 * D * H): 15/16 of it at ratio 1/4.
  const double design = 2.0 * double(n) * double(n / 4) * double(d) * double(h);
  CHECK(std::fabs(double(fwd) / design - 15.0 / 16.0) < 0.01);
  // Heads [0, n_heads): only the unshifted ones, then all of them.
  CHECK(ll::attn_flops(s2, h / 2, d, false) == 4 * d * (h / 2) * ll::attn_visible_pairs(s2, 0));
  CHECK(ll::attn_flops(s2, 0, d, true) == 0);
  // S2Roll: both halves do the unshifted work.
  const AttentionPattern roll{AttnMode::S2Roll, n, n / 4, h};
  CHECK(ll::attn_flops(roll, h, d, false) == 4 * d * h * ll::attn_visible_pairs(s2, 0));
}

TEST_CASE("worked examples: S2 boundaries, the straddling tile, the S2Roll wrap") {
  // S2, N = 20, G = 8, tiles of 4. Shifted segments [0, 4), [4, 12), [12, 20).
  const AttentionPattern s2{AttnMode::S2, 20, 8, 2};
  auto eq = [](TileRange a, int64_t f, int64_t l) { return a.first == f && a.last == l; };
  CHECK(eq(ll::attn_key_tiles(s2, 0, 2, 4, 4), 2, 2));      // unshifted: queries 8..11 see 8..11
  CHECK(eq(ll::attn_key_tiles(s2, 1, 2, 4, 4), 1, 2));      // shifted: 8..11 see 4..11
  CHECK(eq(ll::attn_key_tiles(s2, 1, 3, 4, 4), 3, 3));      // 12..15 start a segment
  CHECK(!ll::attn_key_tile_needs_mask(s2, 1, 2, 1, 4, 4));  // keys 4..7 for queries 8..11
  CHECK(ll::attn_key_tile_needs_mask(s2, 1, 2, 2, 4, 4));   // diagonal
  // bq = 8: query tile 1 = 8..15 straddles the shifted boundary at 12 -> keys 4..15.
  CHECK(eq(ll::attn_key_tiles(s2, 1, 1, 8, 4), 1, 3));
  CHECK(ll::attn_key_tile_needs_mask(s2, 1, 1, 1, 8, 4));  // queries 12..15 do not see 4..7
  CHECK(eq(ll::attn_query_tiles(s2, 1, 1, 8, 4), 0, 1));   // keys 4..7 seen by queries 4..11
  // Ragged N: the last query tile is always masked.
  const AttentionPattern dense{AttnMode::Dense, 18, 2, 2};
  CHECK(eq(ll::attn_key_tiles(dense, 0, 4, 4, 4), 0, 4));
  CHECK(ll::attn_key_tile_needs_mask(dense, 0, 4, 0, 4, 4));
  CHECK(!ll::attn_key_tile_needs_mask(dense, 0, 3, 0, 4, 4));

  // S2Roll, N = 24, G = 8, shifted head: rolled tile 2 (rolled 16..23) holds positions 20..23
  // then 0..3 (the wrap) and visits only rolled key tile 2, which is contiguous.
  const AttentionPattern roll{AttnMode::S2Roll, 24, 8, 2};
  CHECK(eq(ll::attn_key_tiles(roll, 1, 2, 8, 8), 2, 2));
  CHECK(eq(ll::attn_query_tiles(roll, 1, 2, 8, 8), 2, 2));
  std::vector<int64_t> rows;
  for (int64_t u = 16; u < 24; ++u) rows.push_back(ll::attn_query_of_visit(roll, 1, u));
  CHECK(rows == std::vector<int64_t>{20, 21, 22, 23, 0, 1, 2, 3});
  // Positions 0..7 of the shifted head are spread over two rolled tiles.
  CHECK(ll::attn_visit_of_key(roll, 1, 0) / 8 == 2);
  CHECK(ll::attn_visit_of_key(roll, 1, 4) / 8 == 0);
}

TEST_CASE("GQA: kv heads share a key visit space unless an S2Roll group straddles H/2") {
  for (AttnMode mode : {AttnMode::Dense, AttnMode::S2, AttnMode::S2Roll})
    for (int64_t h = 1; h <= 16; ++h)
      for (int64_t kv = 1; kv <= h; ++kv) {
        if (h % kv != 0) continue;
        const AttentionPattern m{mode, 64, 16, h};
        const int64_t group = h / kv;
        bool uniform = true;
        for (int64_t hk = 0; hk < kv; ++hk)
          for (int64_t q = hk * group; q < (hk + 1) * group; ++q)
            uniform = uniform && ll::attn_head_shift(m, q) == ll::attn_head_shift(m, hk * group);
        CAPTURE(int(mode));
        CAPTURE(h);
        CAPTURE(kv);
        CHECK(ll::attn_kv_heads_share_visit_space(m, kv) == (mode != AttnMode::S2Roll || uniform));
      }
}

}  // namespace
