#pragma once
// Which keys a query may attend to, for dense causal attention and the S2-Attn modes.
// Shared by the CPU reference and the CUDA kernels (host and device code).
//
// Dense:   query i sees keys [0, i].
// S2:      the official LongLoRA flash-attention path. Heads [0, H/2) attend causally inside
//          segments [0,G), [G,2G), ...; heads [H/2, H) inside [0,G/2), [G/2,3G/2), ...,
//          so query i sees keys [segment_start(i), i]. A last segment shorter than G is just
//          the causal clip. No data moves.
// S2Roll:  the paper's pseudocode (opt-in, for comparison): the second half of heads is
//          rolled by -G/2 with wrap-around, grouped, attended causally in rolled order and
//          rolled back. In rolled index r = (i - G/2) mod N, query r sees rolled keys
//          [floor(r/G)*G, r]; rolled key r' is original token (r' + G/2) mod N. The last
//          group therefore joins [N-G/2, N) with [0, G/2) (the known leak).
#include <cstdint>
#include <optional>

#if defined(__CUDACC__)
#define LL_HOST_DEVICE __host__ __device__
#else
#define LL_HOST_DEVICE
#endif

namespace ll {

enum class AttnMode : int { Dense = 0, S2 = 1, S2Roll = 2 };

struct AttentionPattern {
  AttnMode mode = AttnMode::Dense;
  int64_t seq_len = 0;     // N
  int64_t group_size = 0;  // G (S2 modes), >= 2 and even; unused for Dense
  int64_t n_heads = 0;     // H (query heads): the shifted half is heads [H/2, H)
  // Context parallelism (engine/parallel/context_exchange.h): one call's queries are window
  // positions [query_offset, query_offset + Nq) and its keys/values positions
  // [key_offset, query_offset + Nq) (key_offset <= query_offset: the keys before the queries came
  // from other ranks). seq_len stays the window's N; every function below takes and returns
  // window positions. Both 0 for a whole window. Dense and S2 only (the CPU kernels so far).
  // `window_part` says the call covers a part (a whole-window call must have N = seq_len).
  int64_t query_offset = 0;
  int64_t key_offset = 0;
  bool window_part = false;
};

// The shift (0 or G/2) that applies to query head `head`.
LL_HOST_DEVICE inline int64_t attn_head_shift(const AttentionPattern& m, int64_t head) {
  if (m.mode == AttnMode::Dense) return 0;
  return head >= m.n_heads / 2 ? m.group_size / 2 : 0;
}

// Keys visited by query i of head `head`, as a contiguous run of "visit indices"
// [first, last] (inclusive). key_of_visit maps a visit index to the original key position.
// For Dense and S2 the visit index is the key position itself.
struct KeyRange {
  int64_t first;
  int64_t last;
};

LL_HOST_DEVICE inline KeyRange attn_key_range(const AttentionPattern& m, int64_t head, int64_t i) {
  if (m.mode == AttnMode::Dense) return {0, i};
  const int64_t g = m.group_size;
  const int64_t shift = attn_head_shift(m, head);
  if (m.mode == AttnMode::S2) {
    if (shift == 0) return {(i / g) * g, i};
    if (i < shift) return {0, i};
    return {shift + ((i - shift) / g) * g, i};
  }
  // S2Roll: work in rolled coordinates.
  const int64_t r = ((i - shift) % m.seq_len + m.seq_len) % m.seq_len;
  return {(r / g) * g, r};
}

LL_HOST_DEVICE inline int64_t attn_key_of_visit(const AttentionPattern& m, int64_t head,
                                                int64_t v) {
  if (m.mode != AttnMode::S2Roll) return v;
  return (v + attn_head_shift(m, head)) % m.seq_len;
}

// Group size LongLoRA uses for a training length N and ratio (1/4 by default), rounded
// down to an even number of at least 2 so that G/2 is whole.
inline int64_t s2_group_size(int64_t seq_len, double ratio) {
  int64_t g = static_cast<int64_t>(static_cast<double>(seq_len) * ratio);
  g -= g % 2;
  return g < 2 ? 2 : g;
}

// What a caller knows of an S2-Attn setup; an empty field is not checked (the options know no
// head count yet, the model's mask no ratio).
struct S2GroupInput {
  std::optional<double> ratio;        // --group-ratio: G = N x ratio
  std::optional<int64_t> seq_len;     // N; with ratio, N x ratio must reach 2 tokens
  std::optional<int64_t> group_size;  // G itself
  std::optional<int64_t> n_heads;     // H (query heads)
};

// The S2 group rules, the one check every caller uses (options, trainer, model mask): a finite
// ratio in (0, 1]; N x ratio >= 2 tokens (s2_group_size would round a smaller group up to 2);
// G even and >= 2 (G/2 whole); H even (half of the heads shift). Throws ll::Error naming the
// rule, the values and what to change. s2_group_size's results always pass.
void check_s2_group(const S2GroupInput& in);

}  // namespace ll
