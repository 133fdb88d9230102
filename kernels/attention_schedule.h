#pragma once
// Tile schedule of the tiled (tensor-core) attention kernels for every mask, and the work
// counts (visible pairs, FLOPs) that benchmarks report. Plain header: host and device code.
// All ranges are in visit indices (kernels/attention_pattern.h): every mask is a run of
// consecutive segments there, query u sees keys [segment_start(u), u], so the key tiles of a
// query tile (and the query tiles of a key tile) form one contiguous, exact range.
// Why that holds, the S2Roll wrap and GQA: docs/subsystems/attention-kernels.md.
#include <cstdint>

#include "kernels/attention_pattern.h"
#include "kernels/cuda/attention_ranges.h"

namespace ll {

// A run of tile indices [first, last], inclusive; empty when first > last.
struct TileRange {
  int64_t first;
  int64_t last;
};

LL_HOST_DEVICE inline int64_t attn_tile_count(int64_t n, int64_t tile) {
  return (n + tile - 1) / tile;
}

// First visit index of the segment holding query visit index u (0 <= u < N).
LL_HOST_DEVICE inline int64_t attn_visit_segment_start(const AttentionPattern& m, int64_t head,
                                                       int64_t u) {
  return attn_key_range(m, head, attn_query_of_visit(m, head, u)).first;
}

// Last visit index of the segment holding key visit index v (0 <= v < N).
LL_HOST_DEVICE inline int64_t attn_visit_segment_last(const AttentionPattern& m, int64_t head,
                                                      int64_t v) {
  return attn_query_range(m, head, attn_key_of_visit(m, head, v)).last;
}

// Key tiles (units of bk over key visit indices) that query tile q_tile (units of bq) of query
// head `head` must visit: exactly those holding at least one visible (query, key) pair.
LL_HOST_DEVICE inline TileRange attn_key_tiles(const AttentionPattern& m, int64_t head,
                                               int64_t q_tile, int64_t bq, int64_t bk) {
  const int64_t u0 = q_tile * bq;
  if (q_tile < 0 || u0 >= m.seq_len) return {0, -1};
  const int64_t u1 = (u0 + bq < m.seq_len ? u0 + bq : m.seq_len) - 1;
  return {attn_visit_segment_start(m, head, u0) / bk, u1 / bk};
}

// Query tiles that key tile k_tile must visit in the dK/dV backward: exactly those holding at
// least one visible pair. The keys [v0, v1] are seen by queries [v0, end of v1's segment]
// (union of attn_query_range over the tile, contiguous for the same reason as above).
LL_HOST_DEVICE inline TileRange attn_query_tiles(const AttentionPattern& m, int64_t head,
                                                 int64_t k_tile, int64_t bq, int64_t bk) {
  const int64_t v0 = k_tile * bk;
  if (k_tile < 0 || v0 >= m.seq_len) return {0, -1};
  const int64_t v1 = (v0 + bk < m.seq_len ? v0 + bk : m.seq_len) - 1;
  return {v0 / bq, attn_visit_segment_last(m, head, v1) / bq};
}

// False when every query of the full bq x bk tile sees every key of it, so the kernel may skip
// the per-element mask (fast path); true for diagonal tiles, tiles cut by a segment boundary,
// and tiles reaching past N (ragged last tile of either side: out-of-range rows are treated as
// needing the mask so that no padded query row, e.g. with an unwritten lse in the backward,
// reaches the unmasked path). Exact: true iff some pair of the rectangle is not visible.
// With segment_start non-decreasing, "all visible" is: the key tile ends at or before the
// query tile's first row, and starts at or after the segment start of its last row.
LL_HOST_DEVICE inline bool attn_key_tile_needs_mask(const AttentionPattern& m, int64_t head,
                                                    int64_t q_tile, int64_t k_tile, int64_t bq,
                                                    int64_t bk) {
  const int64_t u0 = q_tile * bq, u1 = u0 + bq - 1;
  const int64_t k0 = k_tile * bk, k1 = k0 + bk - 1;
  if (q_tile < 0 || k_tile < 0 || u1 >= m.seq_len) return true;
  return !(k1 <= u0 && k0 >= attn_visit_segment_start(m, head, u1));
}

// Whether every kv head's query heads (GQA groups of n_heads / n_kv_heads consecutive heads)
// share one key visit space, so one dK/dV block can own one key tile for its whole group.
// Always true for Dense and S2 (visit index = position); for S2Roll the group must not straddle
// the shifted half at H/2, i.e. (H/2) % group == 0 (n_kv_heads even suffices).
LL_HOST_DEVICE inline bool attn_kv_heads_share_visit_space(const AttentionPattern& m,
                                                           int64_t n_kv_heads) {
  if (m.mode != AttnMode::S2Roll) return true;
  const int64_t group = m.n_heads / n_kv_heads;
  return (m.n_heads / 2) % group == 0;
}

// Work counting.

LL_HOST_DEVICE inline int64_t attn_causal_pairs(int64_t len) { return len * (len + 1) / 2; }

// Causal pairs of [0, n) cut into segments of g (the last one ragged).
LL_HOST_DEVICE inline int64_t attn_segmented_pairs(int64_t n, int64_t g) {
  return (n / g) * attn_causal_pairs(g) + attn_causal_pairs(n % g);
}

// Number of (query, key) pairs of head `head` with the key visible, in closed form per segment.
LL_HOST_DEVICE inline int64_t attn_visible_pairs(const AttentionPattern& m, int64_t head) {
  const int64_t n = m.seq_len;
  if (n <= 0) return 0;
  if (m.mode == AttnMode::Dense) return attn_causal_pairs(n);
  const int64_t shift = attn_head_shift(m, head);
  // S2Roll segments rolled indices from 0 for both halves: rolling moves data, not work.
  if (m.mode == AttnMode::S2Roll || shift == 0) return attn_segmented_pairs(n, m.group_size);
  const int64_t first = shift < n ? shift : n;  // S2 shifted: [0, G/2) first, then period G
  return attn_causal_pairs(first) + attn_segmented_pairs(n - first, m.group_size);
}

// Attention FLOPs of heads [0, n_heads) (normally m.n_heads, one layer, one sequence) under the
// FlashAttention convention of DESIGN.md section 6: forward = 2 matmuls (QK^T, PV) of 2 flops per
// multiply-add over the visible pairs = 4 * pairs * head_dim per head; backward = 2.5x forward.
// Exact visible pairs are counted, diagonal included: dense gives 2 N^2 D H + 2 N D H (the
// design's "4 N^2 D H halved" plus the N-term of the diagonal). Against the design's S2
// estimate "N * G, halved": the unshifted half (G | N) does N * G / 2 + N / 2 pairs, the shifted
// half about G^2 / 4 fewer (its two end segments are half size), so at ratio 1/4 the two halves
// average 15/16 of the estimate.
LL_HOST_DEVICE inline int64_t attn_flops(const AttentionPattern& m, int64_t n_heads,
                                         int64_t head_dim, bool backward) {
  int64_t pairs = 0;
  const int64_t half = m.n_heads / 2;
  const int64_t unshifted = n_heads < half ? n_heads : half;
  if (unshifted > 0) pairs += unshifted * attn_visible_pairs(m, 0);
  if (n_heads > unshifted) pairs += (n_heads - unshifted) * attn_visible_pairs(m, half);
  const int64_t fwd = 4 * pairs * head_dim;
  return backward ? fwd * 5 / 2 : fwd;
}

// Total (query tile, key tile) blocks the forward scheduler visits for one head (the dK/dV
// backward visits the same set, transposed). Host-side loop over the query tiles.
LL_HOST_DEVICE inline int64_t attn_tiles_visited(const AttentionPattern& m, int64_t head,
                                                 int64_t bq, int64_t bk) {
  int64_t total = 0;
  const int64_t nq = attn_tile_count(m.seq_len, bq);
  for (int64_t q = 0; q < nq; ++q) {
    const TileRange r = attn_key_tiles(m, head, q, bq, bk);
    total += r.last - r.first + 1;
  }
  return total;
}

}  // namespace ll
