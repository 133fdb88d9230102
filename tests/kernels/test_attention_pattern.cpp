// The key-range arithmetic of kernels/attention_pattern.h, shared by the CPU and CUDA kernels:
// total work per mode, exact S2 segment boundaries, and the roll mode's wrap-around group.
#include <doctest/doctest.h>

#include <algorithm>
#include <set>
#include <utility>
#include <vector>

#include "kernels/attention_pattern.h"

namespace {

using ll::AttentionPattern;
using ll::AttnMode;

// Segments [0, first) then [first, first + G), ... clipped to N.
std::vector<std::pair<int64_t, int64_t>> segments_from(int64_t first, int64_t g, int64_t n) {
  std::vector<std::pair<int64_t, int64_t>> segs;
  if (first > 0) segs.push_back({0, std::min(first, n)});
  for (int64_t a = first; a < n; a += g) segs.push_back({a, std::min(a + g, n)});
  return segs;
}

// Query-key pairs of causal attention inside each segment.
int64_t causal_pairs(const std::vector<std::pair<int64_t, int64_t>>& segs) {
  int64_t total = 0;
  for (auto [a, b] : segs) total += (b - a) * (b - a + 1) / 2;
  return total;
}

// The keys query i of `head` visits, in visit order.
std::vector<int64_t> visited_keys(const AttentionPattern& m, int64_t head, int64_t i) {
  const ll::KeyRange r = ll::attn_key_range(m, head, i);
  std::vector<int64_t> keys;
  for (int64_t v = r.first; v <= r.last; ++v) keys.push_back(ll::attn_key_of_visit(m, head, v));
  return keys;
}

std::vector<int64_t> iota(int64_t a, int64_t b) {
  std::vector<int64_t> v;
  for (int64_t i = a; i < b; ++i) v.push_back(i);
  return v;
}

struct Shape {
  int64_t n, g, h;
};
const Shape kShapes[] = {{64, 16, 4}, {50, 16, 8},  {32, 32, 2}, {9, 2, 2},
                         {1, 2, 2},   {100, 24, 4}, {24, 8, 2},  {7, 6, 4}};

TEST_CASE("the visited keys add up to the expected work in every mode") {
  for (const Shape& s : kShapes) {
    for (AttnMode mode : {AttnMode::Dense, AttnMode::S2, AttnMode::S2Roll}) {
      CAPTURE(s.n);
      CAPTURE(s.g);
      CAPTURE(s.h);
      CAPTURE(int(mode));
      const AttentionPattern m{mode, s.n, s.g, s.h};
      int64_t visited = 0;
      for (int64_t head = 0; head < s.h; ++head)
        for (int64_t i = 0; i < s.n; ++i) {
          const ll::KeyRange r = ll::attn_key_range(m, head, i);
          REQUIRE(r.first <= r.last);
          visited += r.last - r.first + 1;
        }
      const int64_t half = s.h / 2;
      int64_t expected = 0;
      if (mode == AttnMode::Dense) {
        expected = s.h * s.n * (s.n + 1) / 2;
      } else if (mode == AttnMode::S2) {
        expected = half * causal_pairs(segments_from(0, s.g, s.n)) +
                   half * causal_pairs(segments_from(s.g / 2, s.g, s.n));
      } else {
        // Rolling moves data, not work: both halves see groups of G in their own order.
        expected = s.h * causal_pairs(segments_from(0, s.g, s.n));
      }
      CHECK(visited == expected);
    }
  }
}

TEST_CASE("every query visits exactly the keys of its segment or rolled group") {
  for (const Shape& s : kShapes) {
    for (AttnMode mode : {AttnMode::Dense, AttnMode::S2, AttnMode::S2Roll}) {
      const AttentionPattern m{mode, s.n, s.g, s.h};
      for (int64_t head = 0; head < s.h; ++head) {
        const bool shifted = mode != AttnMode::Dense && head >= s.h / 2;
        // Build the expected key set of each query from explicit segments.
        std::vector<std::vector<int64_t>> expected(static_cast<size_t>(s.n));
        if (mode == AttnMode::Dense) {
          for (int64_t i = 0; i < s.n; ++i) expected[size_t(i)] = iota(0, i + 1);
        } else if (mode == AttnMode::S2 || !shifted) {
          for (auto [a, b] : segments_from(shifted ? s.g / 2 : 0, s.g, s.n))
            for (int64_t i = a; i < b; ++i) expected[size_t(i)] = iota(a, i + 1);
        } else {
          // Rolled order: position r holds token (r + G/2) mod N; groups of G, causal in r.
          std::vector<int64_t> token_at(static_cast<size_t>(s.n));
          for (int64_t r = 0; r < s.n; ++r) token_at[size_t(r)] = (r + s.g / 2) % s.n;
          for (auto [a, b] : segments_from(0, s.g, s.n))
            for (int64_t r = a; r < b; ++r)
              for (int64_t r2 = a; r2 <= r; ++r2)
                expected[size_t(token_at[size_t(r)])].push_back(token_at[size_t(r2)]);
        }
        for (int64_t i = 0; i < s.n; ++i) {
          CAPTURE(s.n);
          CAPTURE(s.g);
          CAPTURE(int(mode));
          CAPTURE(head);
          CAPTURE(i);
          const auto keys = visited_keys(m, head, i);
          CHECK(keys == expected[size_t(i)]);
          CHECK(keys.back() == i);  // a query always sees itself, last
        }
      }
    }
  }
}

TEST_CASE("S2 segment boundaries of the unshifted and shifted halves") {
  const AttentionPattern m{AttnMode::S2, 20, 8, 4};
  CHECK(ll::attn_head_shift(m, 0) == 0);
  CHECK(ll::attn_head_shift(m, 1) == 0);
  CHECK(ll::attn_head_shift(m, 2) == 4);
  CHECK(ll::attn_head_shift(m, 3) == 4);
  // Unshifted heads: [0, 8), [8, 16), [16, 20).
  CHECK(visited_keys(m, 1, 7) == iota(0, 8));
  CHECK(visited_keys(m, 1, 8) == iota(8, 9));
  CHECK(visited_keys(m, 1, 19) == iota(16, 20));
  // Shifted heads: [0, 4), [4, 12), [12, 20).
  CHECK(visited_keys(m, 2, 0) == iota(0, 1));
  CHECK(visited_keys(m, 2, 3) == iota(0, 4));
  CHECK(visited_keys(m, 2, 4) == iota(4, 5));
  CHECK(visited_keys(m, 3, 11) == iota(4, 12));
  CHECK(visited_keys(m, 3, 12) == iota(12, 13));
  CHECK(visited_keys(m, 3, 19) == iota(12, 20));
  // Dense ignores heads and groups.
  const AttentionPattern dense{AttnMode::Dense, 20, 8, 4};
  CHECK(ll::attn_head_shift(dense, 3) == 0);
  CHECK(visited_keys(dense, 3, 19) == iota(0, 20));
}

TEST_CASE("S2Roll: the last rolled group joins the tail [N-G/2, N) with the head [0, G/2)") {
  const AttentionPattern m{AttnMode::S2Roll, 24, 8, 2};
  // Head 1 is shifted: rolled order is tokens 4..23, 0..3; groups of 8.
  CHECK(visited_keys(m, 1, 4) == iota(4, 5));  // first rolled position
  CHECK(visited_keys(m, 1, 11) == iota(4, 12));
  CHECK(visited_keys(m, 1, 19) == iota(12, 20));
  CHECK(visited_keys(m, 1, 20) == iota(20, 21));
  CHECK(visited_keys(m, 1, 23) == iota(20, 24));
  // The leak: early tokens attend to the last ones.
  CHECK(visited_keys(m, 1, 0) == std::vector<int64_t>{20, 21, 22, 23, 0});
  CHECK(visited_keys(m, 1, 3) == std::vector<int64_t>{20, 21, 22, 23, 0, 1, 2, 3});
  // Head 0 is not rolled.
  CHECK(visited_keys(m, 0, 3) == iota(0, 4));
  CHECK(visited_keys(m, 0, 23) == iota(16, 24));

  // Ragged N = 20: rolled 4..19, 0..3 cut at 8, 16: the short last group is [0, 4) alone.
  const AttentionPattern ragged{AttnMode::S2Roll, 20, 8, 2};
  CHECK(visited_keys(ragged, 1, 0) == iota(0, 1));
  CHECK(visited_keys(ragged, 1, 3) == iota(0, 4));
  CHECK(visited_keys(ragged, 1, 19) == iota(12, 20));
}

TEST_CASE("s2_group_size rounds N * ratio down to an even number >= 2") {
  CHECK(ll::s2_group_size(4096, 0.25) == 1024);
  CHECK(ll::s2_group_size(100, 0.25) == 24);  // 25 -> 24
  CHECK(ll::s2_group_size(10, 0.5) == 4);     // 5 -> 4
  CHECK(ll::s2_group_size(8, 0.25) == 2);
  CHECK(ll::s2_group_size(4, 0.25) == 2);  // 1 -> 0 -> at least 2
  CHECK(ll::s2_group_size(1, 0.25) == 2);
  CHECK(ll::s2_group_size(1000, 1.0) == 1000);
}

}  // namespace
