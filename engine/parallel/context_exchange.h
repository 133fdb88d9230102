#pragma once
// Context parallelism's exchange plan (issue 20): a window of N tokens split into C contiguous
// parts, one per rank of a context-parallel group; which keys and values each part must receive
// from the others for its queries' attention, derived from the mask's segment arithmetic
// (kernels/attention_pattern.h), never assumed. For S2-Attn with N/C a multiple of G the
// unshifted heads need nothing and the shifted heads the last G/2 keys of the previous part;
// any other split (N/C below G, ragged groups, the roll form's wrap-around, dense attention)
// gets exactly the key ranges its segments reach. The backward sends the gradients of the
// received keys and values back along the same transfers.
#include <cstdint>
#include <vector>

#include "kernels/attention_pattern.h"

namespace ll::dist {

// Part p holds token positions [begin, end); the C parts are contiguous, in order, and their
// sizes differ by at most one token (the first N mod C parts have the extra one).
struct ContextPart {
  int64_t begin = 0;
  int64_t end = 0;
  int64_t size() const { return end - begin; }
};
std::vector<ContextPart> context_parts(int64_t seq_len, int parts);

// Keys and values of positions [begin, end) for kv heads [kv_head_begin, kv_head_end), sent by
// part `from` (their owner) to part `to` (whose queries attend to them).
struct KeyTransfer {
  int from = 0;
  int to = 0;
  int64_t kv_head_begin = 0;
  int64_t kv_head_end = 0;
  int64_t begin = 0;
  int64_t end = 0;
  int64_t tokens() const { return end - begin; }
  int64_t kv_heads() const { return kv_head_end - kv_head_begin; }
};

struct ContextExchange {
  std::vector<ContextPart> parts;
  std::vector<KeyTransfer> transfers;  // by receiving part, then kv heads, then position
  // K and V elements (both counted) part `part` receives per layer in the forward; the backward
  // returns as many gradient elements to their owners.
  int64_t received_kv_elements(int part, int64_t head_dim) const;
  int64_t sent_kv_elements(int part, int64_t head_dim) const;
};

// The exchange for `mask` over the whole window (mask.seq_len = N, its mode, group and query
// heads) with n_kv_heads key/value heads (query head q reads kv head q / (H / Hkv)), split into
// `parts` parts. Throws ll::Error for parts < 1 or more parts than tokens.
ContextExchange plan_context_exchange(const AttentionPattern& mask, int64_t n_kv_heads, int parts);

// Ring attention (dense causal attention under context parallelism): part `part` receives the
// keys and values of every other part once per layer in the forward, 2 x (N - its size) x
// kv_dim elements ((C - 1) / C of the window's K and V for equal parts); the backward passes
// them around again with their gradient accumulators, twice as much.
int64_t ring_forward_kv_elements(int64_t seq_len, int parts, int part, int64_t kv_dim);
int64_t ring_backward_kv_elements(int64_t seq_len, int parts, int part, int64_t kv_dim);

}  // namespace ll::dist
