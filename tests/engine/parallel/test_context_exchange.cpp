// The context-parallel exchange plan (engine/parallel/context_exchange.h) against brute force:
// for every part, query head and query, every key the mask lets it see is the part's own or was
// received for that query's kv head, and every received key is seen by some query of the part;
// and the S2 halo formula when N / C is a multiple of G.
#include <doctest/doctest.h>

#include <set>
#include <tuple>

#include "common/error.h"
#include "engine/parallel/context_exchange.h"

namespace {

using namespace ll;
using namespace ll::dist;

AttentionPattern pattern(AttnMode mode, int64_t n, int64_t g, int64_t h) {
  AttentionPattern m;
  m.mode = mode;
  m.seq_len = n;
  m.group_size = g;
  m.n_heads = h;
  return m;
}

// (kv head, key) pairs part `p` holds after the exchange: its own and the received ones.
std::set<std::pair<int64_t, int64_t>> held(const ContextExchange& ex, int p, int64_t hkv) {
  std::set<std::pair<int64_t, int64_t>> out;
  for (int64_t kv = 0; kv < hkv; ++kv)
    for (int64_t j = ex.parts[size_t(p)].begin; j < ex.parts[size_t(p)].end; ++j)
      out.insert({kv, j});
  for (const KeyTransfer& t : ex.transfers) {
    if (t.to != p) continue;
    CHECK(t.from != t.to);
    CHECK(t.begin >= ex.parts[size_t(t.from)].begin);  // the sender owns what it sends
    CHECK(t.end <= ex.parts[size_t(t.from)].end);
    for (int64_t kv = t.kv_head_begin; kv < t.kv_head_end; ++kv)
      for (int64_t j = t.begin; j < t.end; ++j) CHECK(out.insert({kv, j}).second);  // once
  }
  return out;
}

void check_exact(const AttentionPattern& m, int64_t hkv, int parts) {
  CAPTURE(int(m.mode));
  CAPTURE(m.seq_len);
  CAPTURE(m.group_size);
  CAPTURE(m.n_heads);
  CAPTURE(hkv);
  CAPTURE(parts);
  const ContextExchange ex = plan_context_exchange(m, hkv, parts);
  const int64_t per_kv = m.n_heads / hkv;
  for (int p = 0; p < parts; ++p) {
    const std::set<std::pair<int64_t, int64_t>> have = held(ex, p, hkv);
    std::set<std::pair<int64_t, int64_t>> used;
    for (int64_t q = 0; q < m.n_heads; ++q) {
      for (int64_t i = ex.parts[size_t(p)].begin; i < ex.parts[size_t(p)].end; ++i) {
        const KeyRange r = attn_key_range(m, q, i);
        for (int64_t v = r.first; v <= r.last; ++v) {
          const int64_t j = attn_key_of_visit(m, q, v);
          used.insert({q / per_kv, j});
          if (!have.count({q / per_kv, j})) {
            FAIL_CHECK("part " << p << " head " << q << " query " << i << " needs key " << j);
          }
        }
      }
    }
    // Nothing received that no query of the part reads.
    for (const KeyTransfer& t : ex.transfers) {
      if (t.to != p) continue;
      for (int64_t kv = t.kv_head_begin; kv < t.kv_head_end; ++kv)
        for (int64_t j = t.begin; j < t.end; ++j) CHECK(used.count({kv, j}) == 1);
    }
  }
}

}  // namespace

TEST_CASE("parts are contiguous and differ by at most one token") {
  const std::vector<ContextPart> p = context_parts(10, 4);
  REQUIRE(p.size() == 4);
  CHECK(p[0].begin == 0);
  CHECK(p[0].size() == 3);
  CHECK(p[1].size() == 3);
  CHECK(p[2].size() == 2);
  CHECK(p[3].end == 10);
  for (size_t i = 1; i < p.size(); ++i) CHECK(p[i].begin == p[i - 1].end);
  CHECK_THROWS_WITH_AS(context_parts(3, 4), doctest::Contains("3 tokens cannot be split into 4"),
                       Error);
  CHECK_THROWS_AS(context_parts(3, 0), Error);
}

TEST_CASE("S2 with N / C a multiple of G: the shifted heads' G/2 halo from the previous part") {
  // N 64, C 4: 16 tokens per part, G 8 (two groups per part); 8 query heads over 4 kv heads.
  const AttentionPattern m = pattern(AttnMode::S2, 64, 8, 8);
  const ContextExchange ex = plan_context_exchange(m, 4, 4);
  REQUIRE(ex.transfers.size() == 3);
  for (int p = 1; p < 4; ++p) {
    const KeyTransfer& t = ex.transfers[size_t(p - 1)];
    CHECK(t.from == p - 1);
    CHECK(t.to == p);
    CHECK(t.kv_head_begin == 2);  // kv heads 2, 3 serve the shifted query heads 4-7
    CHECK(t.kv_head_end == 4);
    CHECK(t.begin == 16 * p - 4);
    CHECK(t.end == 16 * p);
    // G/2 tokens x Hkv/2 heads x hd x (K and V).
    CHECK(ex.received_kv_elements(p, 32) == 4 * 2 * 32 * 2);
  }
  CHECK(ex.received_kv_elements(0, 32) == 0);
  CHECK(ex.sent_kv_elements(3, 32) == 0);
  CHECK(ex.sent_kv_elements(0, 32) == 4 * 2 * 32 * 2);
  check_exact(m, 4, 4);
}

TEST_CASE("every split receives exactly the keys its segments reach") {
  for (const AttnMode mode : {AttnMode::Dense, AttnMode::S2, AttnMode::S2Roll}) {
    for (const int64_t n : {int64_t(12), int64_t(37), int64_t(64)}) {
      for (const int64_t g : {int64_t(4), int64_t(10), int64_t(16)}) {
        for (const int parts : {1, 2, 3, 4, 5}) {
          for (const int64_t hkv : {int64_t(1), int64_t(2), int64_t(4)}) {
            check_exact(pattern(mode, n, g, 4), hkv, parts);
          }
        }
      }
    }
  }
}

TEST_CASE("dense attention's exchange is every earlier key; the ring's bytes") {
  const AttentionPattern m = pattern(AttnMode::Dense, 40, 0, 4);
  const ContextExchange ex = plan_context_exchange(m, 2, 4);
  for (int p = 0; p < 4; ++p) CHECK(ex.received_kv_elements(p, 8) == 2 * 10 * p * 2 * 8);
  // The ring passes every other part's K and V: (C - 1) / C of the window, twice backward.
  CHECK(ring_forward_kv_elements(40, 4, 0, 16) == 2 * 30 * 16);
  CHECK(ring_backward_kv_elements(40, 4, 3, 16) == 2 * 2 * 30 * 16);
  CHECK(ring_forward_kv_elements(10, 4, 0, 1) == 2 * 7);  // parts of 3, 3, 2, 2
  CHECK(ring_forward_kv_elements(10, 4, 3, 1) == 2 * 8);
}
