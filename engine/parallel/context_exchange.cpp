#include "engine/parallel/context_exchange.h"

#include <algorithm>

#include "common/error.h"

namespace ll::dist {

namespace {

struct Interval {
  int64_t begin, end;  // [begin, end)
  bool operator==(const Interval&) const = default;
};

// Sorted, disjoint, non-adjacent intervals covering the same positions as `in`.
std::vector<Interval> merged(std::vector<Interval> in) {
  std::sort(in.begin(), in.end(),
            [](const Interval& a, const Interval& b) { return a.begin < b.begin; });
  std::vector<Interval> out;
  for (const Interval& i : in) {
    if (i.end <= i.begin) continue;
    if (!out.empty() && i.begin <= out.back().end) {
      out.back().end = std::max(out.back().end, i.end);
    } else {
      out.push_back(i);
    }
  }
  return out;
}

// Key positions the queries [part.begin, part.end) of query head `head` attend to.
std::vector<Interval> keys_of(const AttentionPattern& m, int64_t head, const ContextPart& part) {
  if (m.mode != AttnMode::S2Roll) {
    // Dense and S2: query i sees [segment start, i], and the segment start never decreases
    // with i, so the part's keys are [start of its first query's segment, its last query].
    const KeyRange first = attn_key_range(m, head, part.begin);
    return {{first.first, part.end}};
  }
  // The roll form: visits are contiguous in rolled order and map back with wrap-around.
  std::vector<Interval> out;
  for (int64_t i = part.begin; i < part.end; ++i) {
    const KeyRange r = attn_key_range(m, head, i);
    const int64_t a = attn_key_of_visit(m, head, r.first);
    const int64_t b = attn_key_of_visit(m, head, r.last);
    if (a <= b) {
      out.push_back({a, b + 1});
    } else {  // wrapped: [a, N) and [0, b]
      out.push_back({a, m.seq_len});
      out.push_back({0, b + 1});
    }
  }
  return merged(std::move(out));
}

// `need` without the part's own positions.
std::vector<Interval> outside(const std::vector<Interval>& need, const ContextPart& own) {
  std::vector<Interval> out;
  for (const Interval& i : need) {
    if (i.begin < own.begin) out.push_back({i.begin, std::min(i.end, own.begin)});
    if (i.end > own.end) out.push_back({std::max(i.begin, own.end), i.end});
  }
  return merged(std::move(out));
}

}  // namespace

std::vector<ContextPart> context_parts(int64_t seq_len, int parts) {
  LL_CHECK(parts >= 1, "context parallelism: {} parts", parts);
  LL_CHECK(seq_len >= parts,
           "context parallelism: {} tokens cannot be split into {} parts (each needs a token)",
           seq_len, parts);
  std::vector<ContextPart> out(static_cast<size_t>(parts));
  const int64_t base = seq_len / parts, extra = seq_len % parts;
  int64_t at = 0;
  for (int p = 0; p < parts; ++p) {
    const int64_t size = base + (p < extra ? 1 : 0);
    out[size_t(p)] = {at, at + size};
    at += size;
  }
  return out;
}

ContextExchange plan_context_exchange(const AttentionPattern& m, int64_t n_kv_heads, int parts) {
  LL_CHECK(m.seq_len >= 1 && m.n_heads >= 1 && n_kv_heads >= 1 && m.n_heads % n_kv_heads == 0,
           "context exchange: {} query heads cannot share {} kv heads", m.n_heads, n_kv_heads);
  ContextExchange ex;
  ex.parts = context_parts(m.seq_len, parts);
  const int64_t per_kv = m.n_heads / n_kv_heads;
  for (int to = 0; to < parts; ++to) {
    const ContextPart& own = ex.parts[size_t(to)];
    // What each kv head's query heads need from outside the part; kv heads with the same needs
    // share transfers.
    std::vector<std::vector<Interval>> need(static_cast<size_t>(n_kv_heads));
    for (int64_t kv = 0; kv < n_kv_heads; ++kv) {
      std::vector<Interval> all;
      for (int64_t q = kv * per_kv; q < (kv + 1) * per_kv; ++q) {
        const std::vector<Interval> k = keys_of(m, q, own);
        all.insert(all.end(), k.begin(), k.end());
      }
      need[size_t(kv)] = outside(merged(std::move(all)), own);
    }
    for (int64_t kv = 0; kv < n_kv_heads;) {
      int64_t kv_end = kv + 1;
      while (kv_end < n_kv_heads && need[size_t(kv_end)] == need[size_t(kv)]) ++kv_end;
      for (const Interval& i : need[size_t(kv)]) {
        // Split by owner.
        for (int from = 0; from < parts; ++from) {
          const ContextPart& p = ex.parts[size_t(from)];
          const int64_t a = std::max(i.begin, p.begin), b = std::min(i.end, p.end);
          if (a < b) ex.transfers.push_back({from, to, kv, kv_end, a, b});
        }
      }
      kv = kv_end;
    }
  }
  return ex;
}

int64_t ContextExchange::received_kv_elements(int part, int64_t head_dim) const {
  int64_t n = 0;
  for (const KeyTransfer& t : transfers)
    if (t.to == part) n += 2 * t.tokens() * t.kv_heads() * head_dim;
  return n;
}

int64_t ContextExchange::sent_kv_elements(int part, int64_t head_dim) const {
  int64_t n = 0;
  for (const KeyTransfer& t : transfers)
    if (t.from == part) n += 2 * t.tokens() * t.kv_heads() * head_dim;
  return n;
}

int64_t ring_forward_kv_elements(int64_t seq_len, int parts, int part, int64_t kv_dim) {
  const std::vector<ContextPart> p = context_parts(seq_len, parts);
  LL_CHECK(part >= 0 && part < parts, "context parallelism: no part {} of {}", part, parts);
  return 2 * (seq_len - p[size_t(part)].size()) * kv_dim;
}

int64_t ring_backward_kv_elements(int64_t seq_len, int parts, int part, int64_t kv_dim) {
  return 2 * ring_forward_kv_elements(seq_len, parts, part, kv_dim);
}

}  // namespace ll::dist
