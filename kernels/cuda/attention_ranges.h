#pragma once
// The inverse of kernels/attention_pattern.h's attn_key_range: which queries see a given key.
// Used by the CUDA attention backward (dK/dV kernel) to bound its loop over query tiles; host
// and device code (plain header, no CUDA needed, so a CPU test can check it exhaustively).
//
// Queries are addressed by "query visit index" u, like keys by key visit index:
//   Dense, S2: u is the query position itself.
//   S2Roll:    u is the rolled index r = (i - shift) mod N; query position i = (u + shift) mod N.
// The queries that see key position j (head `head`) are exactly the visit indices
// [first, last] returned by attn_query_range, both inclusive (never empty for 0 <= j < N).
#include <cstdint>

#include "kernels/attention_pattern.h"

namespace ll {

struct QueryRange {
  int64_t first;
  int64_t last;
};

// The key visit index of key position j for head `head` (inverse of attn_key_of_visit).
LL_HOST_DEVICE inline int64_t attn_visit_of_key(const AttentionPattern& m, int64_t head,
                                                int64_t j) {
  if (m.mode != AttnMode::S2Roll) return j;
  const int64_t shift = attn_head_shift(m, head);
  return ((j - shift) % m.seq_len + m.seq_len) % m.seq_len;
}

// The query position of query visit index u.
LL_HOST_DEVICE inline int64_t attn_query_of_visit(const AttentionPattern& m, int64_t head,
                                                  int64_t u) {
  if (m.mode != AttnMode::S2Roll) return u;
  return (u + attn_head_shift(m, head)) % m.seq_len;
}

LL_HOST_DEVICE inline QueryRange attn_query_range(const AttentionPattern& m, int64_t head,
                                                  int64_t j) {
  const int64_t n = m.seq_len;
  if (m.mode == AttnMode::Dense) return {j, n - 1};
  const int64_t g = m.group_size;
  const int64_t shift = attn_head_shift(m, head);
  if (m.mode == AttnMode::S2) {
    // Key j's segment [s, s + g) (clipped to N); the queries of that segment at or after j.
    if (shift == 0) {
      const int64_t s = (j / g) * g;
      return {j, (s + g < n ? s + g : n) - 1};
    }
    if (j < shift) return {j, (shift < n ? shift : n) - 1};
    const int64_t s = shift + ((j - shift) / g) * g;
    return {j, (s + g < n ? s + g : n) - 1};
  }
  // S2Roll: in rolled coordinates key v is seen by rolled queries [v, end of v's group).
  const int64_t v = attn_visit_of_key(m, head, j);
  const int64_t s = (v / g) * g;
  return {v, (s + g < n ? s + g : n) - 1};
}

}  // namespace ll
