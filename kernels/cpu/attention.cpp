#include "kernels/cpu/attention.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "common/error.h"

namespace ll::cpu {
namespace {

void validate(int64_t n_tokens, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
              const AttentionPattern& mask) {
  LL_CHECK(n_tokens >= 0 && n_heads >= 1 && n_kv_heads >= 1 && head_dim >= 1,
           "attention: bad shape (tokens {}, heads {}, kv heads {}, head_dim {})", n_tokens,
           n_heads, n_kv_heads, head_dim);
  LL_CHECK(n_heads % n_kv_heads == 0,
           "attention: {} query heads are not a multiple of {} key/value heads", n_heads,
           n_kv_heads);
  // A whole window, or a context-parallel part of one (Dense and S2).
  if (!mask.window_part) {
    LL_CHECK(mask.seq_len == n_tokens && mask.query_offset == 0 && mask.key_offset == 0,
             "attention: mask is for {} tokens, input has {}", mask.seq_len, n_tokens);
  } else {
    LL_CHECK(mask.mode != AttnMode::S2Roll,
             "attention: mask is for {} tokens, input has {} (the roll form's wrap-around needs "
             "keys from both ends of the window: it has no context-parallel parts)",
             mask.seq_len, n_tokens);
    LL_CHECK(mask.key_offset >= 0 && mask.key_offset <= mask.query_offset &&
                 mask.query_offset + n_tokens <= mask.seq_len,
             "attention: queries [{}, {}) and keys from {} do not fit a window of {} tokens",
             mask.query_offset, mask.query_offset + n_tokens, mask.key_offset, mask.seq_len);
  }
  // The S2 modes split heads into halves by mask.n_heads; a mismatch would misplace the split.
  LL_CHECK(mask.n_heads == n_heads, "attention: mask is for {} heads, input has {}", mask.n_heads,
           n_heads);
  if (mask.mode != AttnMode::Dense) {
    LL_CHECK(mask.mode == AttnMode::S2 || mask.mode == AttnMode::S2Roll,
             "attention: unknown mask mode {}", int(mask.mode));
    LL_CHECK(n_heads % 2 == 0, "attention: S2-Attn needs an even number of heads, got {}", n_heads);
    LL_CHECK(mask.group_size >= 2 && mask.group_size % 2 == 0,
             "attention: S2-Attn group size {} must be even and >= 2", mask.group_size);
  }
  // A part's first query sees the earliest keys of its part (segment starts never decrease):
  // they must be among the keys given.
  if (n_tokens > 0 && mask.window_part) {
    for (int64_t h = 0; h < n_heads; ++h) {
      const int64_t first = attn_key_range(mask, h, mask.query_offset).first;
      LL_CHECK(first >= mask.key_offset,
               "attention: head {} at window position {} sees keys from {}, but the keys given "
               "start at {}",
               h, mask.query_offset, first, mask.key_offset);
    }
  }
}

// The keys given: n_tokens queries plus the ones before them.
int64_t key_rows(int64_t n_tokens, const AttentionPattern& mask) {
  return n_tokens + mask.query_offset - mask.key_offset;
}

// Row offsets into the [N, heads, hd] tensors.
struct Rows {
  int64_t n_heads, n_kv_heads, hd;
  int64_t q(int64_t token, int64_t head) const { return (token * n_heads + head) * hd; }
  int64_t kv(int64_t token, int64_t kv_head) const { return (token * n_kv_heads + kv_head) * hd; }
};

// HF multiplies the fp32 scores by head_dim**-0.5.
float score_scale(int64_t head_dim) { return float(1.0 / std::sqrt(double(head_dim))); }

// Scaled score of one query row against one key row ([hd] each), in fp32. The forward and the
// backward share it so that the backward's exp(s - lse) reproduces the forward's probabilities.
float scaled_score(const float* qi, const float* kj, int64_t hd, float scale) {
  float dot = 0.0f;
  for (int64_t d = 0; d < hd; ++d) dot += qi[d] * kj[d];
  return dot * scale;
}

// a . b over [hd] in double (products of floats are exact in double).
double dot_f64(const float* a, const float* b, int64_t hd) {
  double s = 0.0;
  for (int64_t d = 0; d < hd; ++d) s += double(a[d]) * double(b[d]);
  return s;
}

// fn(offset, key) for every key row that query row i of head h sees, in visit order; offset
// counts from 0 along the visit. Rows are the call's (window position less the offsets).
template <typename Fn>
void for_each_key(const AttentionPattern& m, int64_t h, int64_t i, Fn&& fn) {
  const KeyRange range = attn_key_range(m, h, i + m.query_offset);
  for (int64_t vi = range.first; vi <= range.last; ++vi)
    fn(vi - range.first, attn_key_of_visit(m, h, vi) - m.key_offset);
}

// Inverse of attn_key_range: the queries of head h that see key token j, as a run of visit
// indices [first, last]. Queries and keys share visit coordinates (the token itself, or the
// rolled index for S2Roll), and query r sees key r' iff both lie in one segment and r' <= r,
// so the answer is [visit(j), last visit index of j's segment].
KeyRange query_range(const AttentionPattern& m, int64_t h, int64_t j) {
  const int64_t n = m.seq_len;
  if (m.mode == AttnMode::Dense) return {j, n - 1};
  const int64_t g = m.group_size;
  const int64_t shift = attn_head_shift(m, h);
  if (m.mode == AttnMode::S2) {
    int64_t end;  // exclusive end of j's segment before clipping to N
    if (shift == 0) {
      end = (j / g) * g + g;
    } else if (j < shift) {
      end = shift;  // the leading half segment [0, G/2)
    } else {
      end = shift + ((j - shift) / g) * g + g;
    }
    return {j, std::min(end, n) - 1};
  }
  // S2Roll: rolled index r of token j; its group is [floor(r/G)*G, +G) clipped to N.
  const int64_t r = ((j - shift) % n + n) % n;
  return {r, std::min((r / g) * g + g, n) - 1};
}

// fn(query) for every query row of head h that sees key row j, in visit order (for a
// context-parallel part: only this part's queries).
template <typename Fn>
void for_each_query(const AttentionPattern& m, int64_t h, int64_t j, int64_t n_queries, Fn&& fn) {
  const KeyRange range = query_range(m, h, j + m.key_offset);
  if (m.mode == AttnMode::S2Roll) {
    // Queries map to tokens exactly as keys do (the same roll); whole windows only.
    for (int64_t vi = range.first; vi <= range.last; ++vi) fn(attn_key_of_visit(m, h, vi));
    return;
  }
  const int64_t first = std::max(range.first, m.query_offset);
  const int64_t last = std::min(range.last, m.query_offset + n_queries - 1);
  for (int64_t i = first; i <= last; ++i) fn(i - m.query_offset);
}

}  // namespace

void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                       int64_t n_tokens, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
                       const AttentionPattern& mask) {
  validate(n_tokens, n_heads, n_kv_heads, head_dim, mask);
  const int64_t n = n_tokens, hd = head_dim;
  const int64_t heads_per_kv = n_heads / n_kv_heads;
  const Rows rows{n_heads, n_kv_heads, hd};
  const float scale = score_scale(hd);

#pragma omp parallel
  {
    // Per thread: the current query's scores [visited keys] and unnormalised output [hd].
    std::vector<float> scores(static_cast<size_t>(key_rows(n, mask)));
    std::vector<double> acc(static_cast<size_t>(hd));
    // Causal rows differ in length, so hand out (head, query) pairs dynamically.
#pragma omp for collapse(2) schedule(dynamic, 8)
    for (int64_t h = 0; h < n_heads; ++h) {
      for (int64_t i = 0; i < n; ++i) {
        const int64_t kvh = h / heads_per_kv;
        const float* qi = q + rows.q(i, h);  // [hd]
        float mx = -std::numeric_limits<float>::infinity();
        for_each_key(mask, h, i, [&](int64_t at, int64_t key) {
          const float s = scaled_score(qi, k + rows.kv(key, kvh), hd, scale);
          scores[size_t(at)] = s;
          mx = s > mx ? s : mx;
        });
        // Softmax with the max subtracted; sums in double so long rows lose nothing.
        double sum = 0.0;
        for (int64_t d = 0; d < hd; ++d) acc[size_t(d)] = 0.0;
        for_each_key(mask, h, i, [&](int64_t at, int64_t key) {
          const float* vj = v + rows.kv(key, kvh);  // [hd]
          const double p = std::exp(double(scores[size_t(at)]) - double(mx));
          sum += p;
          for (int64_t d = 0; d < hd; ++d) acc[size_t(d)] += p * double(vj[d]);
        });
        float* oi = out + rows.q(i, h);  // [hd]
        for (int64_t d = 0; d < hd; ++d) oi[d] = float(acc[size_t(d)] / sum);
        if (lse != nullptr) lse[h * n + i] = float(double(mx) + std::log(sum));
      }
    }
  }
}

void attention_forward_cached(float* out, const float* q, const float* k, const float* v,
                              int64_t n_queries, int64_t past, int64_t n_heads, int64_t n_kv_heads,
                              int64_t head_dim) {
  LL_CHECK(past >= 0 && n_queries >= 0, "cached attention: {} queries after {} cached tokens",
           n_queries, past);
  // A dense mask over the queries only validates the head counts.
  validate(n_queries, n_heads, n_kv_heads, head_dim,
           AttentionPattern{AttnMode::Dense, n_queries, 0, n_heads});
  const int64_t hd = head_dim, n_keys = past + n_queries;
  const int64_t heads_per_kv = n_heads / n_kv_heads;
  const Rows rows{n_heads, n_kv_heads, hd};
  const float scale = score_scale(hd);
#pragma omp parallel
  {
    std::vector<float> scores(static_cast<size_t>(n_keys));  // [keys seen by one query]
    std::vector<double> acc(static_cast<size_t>(hd));        // [hd]
#pragma omp for collapse(2) schedule(dynamic, 1)
    for (int64_t h = 0; h < n_heads; ++h) {
      for (int64_t i = 0; i < n_queries; ++i) {
        const int64_t kvh = h / heads_per_kv, last = past + i;
        const float* qi = q + rows.q(i, h);  // [hd]
        float mx = -std::numeric_limits<float>::infinity();
        for (int64_t j = 0; j <= last; ++j) {
          const float s = scaled_score(qi, k + rows.kv(j, kvh), hd, scale);
          scores[size_t(j)] = s;
          mx = s > mx ? s : mx;
        }
        double sum = 0.0;
        for (int64_t d = 0; d < hd; ++d) acc[size_t(d)] = 0.0;
        for (int64_t j = 0; j <= last; ++j) {
          const float* vj = v + rows.kv(j, kvh);  // [hd]
          const double p = std::exp(double(scores[size_t(j)]) - double(mx));
          sum += p;
          for (int64_t d = 0; d < hd; ++d) acc[size_t(d)] += p * double(vj[d]);
        }
        float* oi = out + rows.q(i, h);  // [hd]
        for (int64_t d = 0; d < hd; ++d) oi[d] = float(acc[size_t(d)] / sum);
      }
    }
  }
}

// Flash-attention backward from the saved lse: P_ij = exp(s_ij - lse_i),
// D_i = dout_i . out_i, dS_ij = P_ij (dout_i . v_j - D_i), dq_i = scale sum_j dS_ij k_j,
// dk_j = scale sum_i dS_ij q_i, dv_j = sum_i P_ij dout_i.
// No atomics: dq is computed per (head, query) row over the keys it sees, dk and dv per
// (kv head, key) over the query heads that read that kv head and the queries that see the
// key. Each output element is written by one iteration that adds in a fixed order, so the
// result does not depend on the thread count or the schedule.
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q,
                        const float* k, const float* v, const float* out, const float* lse,
                        int64_t n_tokens, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
                        const AttentionPattern& mask) {
  validate(n_tokens, n_heads, n_kv_heads, head_dim, mask);
  const int64_t n = n_tokens, hd = head_dim, n_keys = key_rows(n_tokens, mask);
  const int64_t heads_per_kv = n_heads / n_kv_heads;
  const Rows rows{n_heads, n_kv_heads, hd};
  const float scale = score_scale(hd);

  // row_term[h * N + i] = D_i = dout_i . out_i for head h: [H, N].
  std::vector<double> row_term(static_cast<size_t>(n_heads * n));
#pragma omp parallel for collapse(2)
  for (int64_t h = 0; h < n_heads; ++h)
    for (int64_t i = 0; i < n; ++i)
      row_term[size_t(h * n + i)] = dot_f64(dout + rows.q(i, h), out + rows.q(i, h), hd);

  // P_ij and dS_ij of query i (head h) and key j (kv head kvh), recomputed from the saved lse.
  struct ProbGrad {
    double p, ds;
  };
  auto prob_grad = [&](int64_t h, int64_t i, int64_t kvh, int64_t j) {
    const float s = scaled_score(q + rows.q(i, h), k + rows.kv(j, kvh), hd, scale);
    const double p = std::exp(double(s) - double(lse[h * n + i]));
    const double dp = dot_f64(dout + rows.q(i, h), v + rows.kv(j, kvh), hd);
    return ProbGrad{p, p * (dp - row_term[size_t(h * n + i)])};
  };

#pragma omp parallel
  {
    std::vector<double> acc_a(static_cast<size_t>(hd)), acc_b(static_cast<size_t>(hd));  // [hd]
    // dq: one (head, query) row at a time, summing over the keys it sees.
#pragma omp for collapse(2) schedule(dynamic, 8)
    for (int64_t h = 0; h < n_heads; ++h) {
      for (int64_t i = 0; i < n; ++i) {
        const int64_t kvh = h / heads_per_kv;
        std::fill(acc_a.begin(), acc_a.end(), 0.0);
        for_each_key(mask, h, i, [&](int64_t, int64_t key) {
          const double ds = prob_grad(h, i, kvh, key).ds;
          const float* kj = k + rows.kv(key, kvh);  // [hd]
          for (int64_t d = 0; d < hd; ++d) acc_a[size_t(d)] += ds * double(kj[d]);
        });
        float* dqi = dq + rows.q(i, h);  // [hd]
        for (int64_t d = 0; d < hd; ++d) dqi[d] = float(double(scale) * acc_a[size_t(d)]);
      }
    }
    // dk, dv: one (kv head, key) row at a time, summing over its query heads in order, then the
    // queries of each head that see the key.
#pragma omp for collapse(2) schedule(dynamic, 8)
    for (int64_t kvh = 0; kvh < n_kv_heads; ++kvh) {
      for (int64_t j = 0; j < n_keys; ++j) {
        std::fill(acc_a.begin(), acc_a.end(), 0.0);  // dk_j / scale
        std::fill(acc_b.begin(), acc_b.end(), 0.0);  // dv_j
        for (int64_t h = kvh * heads_per_kv; h < (kvh + 1) * heads_per_kv; ++h) {
          for_each_query(mask, h, j, n, [&](int64_t i) {
            const ProbGrad pg = prob_grad(h, i, kvh, j);
            const float* qi = q + rows.q(i, h);      // [hd]
            const float* doi = dout + rows.q(i, h);  // [hd]
            for (int64_t d = 0; d < hd; ++d) {
              acc_a[size_t(d)] += pg.ds * double(qi[d]);
              acc_b[size_t(d)] += pg.p * double(doi[d]);
            }
          });
        }
        float* dkj = dk + rows.kv(j, kvh);  // [hd]
        float* dvj = dv + rows.kv(j, kvh);  // [hd]
        for (int64_t d = 0; d < hd; ++d) {
          dkj[d] = float(double(scale) * acc_a[size_t(d)]);
          dvj[d] = float(acc_b[size_t(d)]);
        }
      }
    }
  }
}

}  // namespace ll::cpu
