// Attention (dense, S2, S2Roll; MHA/GQA/MQA) against independent double references that
// implement S2-Attn the way LongLoRA describes it: explicit segments for S2, and
// torch.roll-style data movement for S2Roll. Neither reference uses kernels/attention_pattern.h.
#include <doctest/doctest.h>

#include <algorithm>
#include <string>

#include "common/error.h"
#include "kernels/cpu/attention.h"
#include "tests/kernels/kernel_test_util.h"

namespace {

using ll::AttnMode;

struct Shape {
  int64_t n, h, hkv, hd, g;
};

// Per-head copies of the inputs in double: q_heads[h] is [N, hd], kv_heads[kvh] is [N, hd].
struct Heads {
  std::vector<std::vector<double>> q, k, v;
};

Heads split_heads(const Shape& s, const std::vector<float>& q, const std::vector<float>& k,
                  const std::vector<float>& v) {
  Heads out;
  auto gather = [&](const std::vector<float>& src, int64_t n_heads, int64_t head) {
    std::vector<double> dst(static_cast<size_t>(s.n * s.hd));  // [N, hd]
    for (int64_t i = 0; i < s.n; ++i)
      for (int64_t d = 0; d < s.hd; ++d)
        dst[size_t(i * s.hd + d)] = src[size_t((i * n_heads + head) * s.hd + d)];
    return dst;
  };
  for (int64_t h = 0; h < s.h; ++h) out.q.push_back(gather(q, s.h, h));
  for (int64_t h = 0; h < s.hkv; ++h) {
    out.k.push_back(gather(k, s.hkv, h));
    out.v.push_back(gather(v, s.hkv, h));
  }
  return out;
}

// Plain causal softmax attention over a contiguous sequence of `len` tokens:
// q, k, v, out: [len, hd]; lse: [len].
void causal_attention(const double* q, const double* k, const double* v, int64_t len, int64_t hd,
                      double* out, double* lse) {
  for (int64_t i = 0; i < len; ++i) {
    std::vector<double> s(static_cast<size_t>(i + 1));  // [i + 1] scores
    for (int64_t j = 0; j <= i; ++j) {
      double dot = 0.0;
      for (int64_t d = 0; d < hd; ++d) dot += q[i * hd + d] * k[j * hd + d];
      s[size_t(j)] = dot / std::sqrt(double(hd));
    }
    const double mx = *std::max_element(s.begin(), s.end());
    double sum = 0.0;
    for (double& x : s) sum += (x = std::exp(x - mx));
    for (int64_t d = 0; d < hd; ++d) {
      double acc = 0.0;
      for (int64_t j = 0; j <= i; ++j) acc += s[size_t(j)] * v[j * hd + d];
      out[i * hd + d] = acc / sum;
    }
    lse[i] = mx + std::log(sum);
  }
}

// Causal attention of one head inside each segment [start, end) of `segments`:
// out: [N, hd] for this head, lse: [N].
void attend_segments(const Heads& x, const Shape& s, int64_t h,
                     const std::vector<std::pair<int64_t, int64_t>>& segments,
                     std::vector<double>& out, std::vector<double>& lse) {
  const int64_t kvh = h / (s.h / s.hkv);
  for (auto [a, b] : segments) {
    causal_attention(x.q[size_t(h)].data() + a * s.hd, x.k[size_t(kvh)].data() + a * s.hd,
                     x.v[size_t(kvh)].data() + a * s.hd, b - a, s.hd, out.data() + a * s.hd,
                     lse.data() + a);
  }
}

// [first, first + G), [first + G, first + 2G), ... clipped to N, preceded by [0, first).
std::vector<std::pair<int64_t, int64_t>> segments_from(int64_t first, int64_t g, int64_t n) {
  std::vector<std::pair<int64_t, int64_t>> segs;
  if (first > 0) segs.push_back({0, std::min(first, n)});
  for (int64_t a = first; a < n; a += g) segs.push_back({a, std::min(a + g, n)});
  return segs;
}

// torch.roll(x, shifts, dim=0) on [N, hd]: y[(i + shifts) mod N] = x[i].
std::vector<double> roll(const std::vector<double>& x, int64_t shifts, int64_t n, int64_t hd) {
  std::vector<double> y(x.size());
  for (int64_t i = 0; i < n; ++i) {
    const int64_t to = ((i + shifts) % n + n) % n;
    std::copy_n(x.begin() + i * hd, hd, y.begin() + to * hd);
  }
  return y;
}

struct Result {
  std::vector<double> out;  // [N, H, hd]
  std::vector<double> lse;  // [H, N]
};

Result reference(const Shape& s, AttnMode mode, const Heads& x) {
  Result r{std::vector<double>(static_cast<size_t>(s.n * s.h * s.hd)),
           std::vector<double>(static_cast<size_t>(s.h * s.n))};
  for (int64_t h = 0; h < s.h; ++h) {
    std::vector<double> out(static_cast<size_t>(s.n * s.hd));  // [N, hd] of head h
    std::vector<double> lse(static_cast<size_t>(s.n));         // [N]
    const bool shifted = h >= s.h / 2;
    if (mode == AttnMode::Dense) {
      attend_segments(x, s, h, {{0, s.n}}, out, lse);
    } else if (!shifted) {
      // First half of heads, both S2 modes: segments [0, G), [G, 2G), ...
      attend_segments(x, s, h, segments_from(0, s.g, s.n), out, lse);
    } else if (mode == AttnMode::S2) {
      // Official flash-attention path: [0, G/2), [G/2, 3G/2), ..., no data movement.
      attend_segments(x, s, h, segments_from(s.g / 2, s.g, s.n), out, lse);
    } else {
      // The paper's pseudocode: roll q, k, v by -G/2 along the sequence, cut into groups of G
      // (the last one shorter), attend causally per group, roll the output back by +G/2.
      const int64_t kvh = h / (s.h / s.hkv);
      Heads rolled;
      rolled.q.resize(size_t(s.h));
      rolled.k.resize(size_t(s.hkv));
      rolled.v.resize(size_t(s.hkv));
      rolled.q[size_t(h)] = roll(x.q[size_t(h)], -s.g / 2, s.n, s.hd);
      rolled.k[size_t(kvh)] = roll(x.k[size_t(kvh)], -s.g / 2, s.n, s.hd);
      rolled.v[size_t(kvh)] = roll(x.v[size_t(kvh)], -s.g / 2, s.n, s.hd);
      std::vector<double> rolled_lse(static_cast<size_t>(s.n));  // [N] in rolled order
      attend_segments(rolled, s, h, segments_from(0, s.g, s.n), out, rolled_lse);
      out = roll(out, s.g / 2, s.n, s.hd);
      lse = roll(rolled_lse, s.g / 2, s.n, 1);
    }
    for (int64_t i = 0; i < s.n; ++i) {
      std::copy_n(out.begin() + i * s.hd, s.hd, r.out.begin() + (i * s.h + h) * s.hd);
      r.lse[size_t(h * s.n + i)] = lse[size_t(i)];
    }
  }
  return r;
}

const char* mode_name(AttnMode m) {
  return m == AttnMode::Dense ? "dense" : m == AttnMode::S2 ? "s2" : "s2roll";
}

TEST_CASE("attention_forward matches segment / roll references") {
  const Shape shapes[] = {
      {64, 4, 4, 16, 16},  // N divisible by G, MHA
      {50, 8, 2, 64, 16},  // ragged last segment, GQA
      {32, 4, 2, 16, 32},  // G = N
      {9, 2, 1, 16, 2},    // G = 2, MQA, odd N
      {1, 2, 2, 16, 2},    // one token
      {48, 8, 2, 16, 12},  // GQA, G/2 = 6
      {40, 2, 2, 64, 8},   // one head per half
  };
  for (uint64_t seed : ll::test::test_seeds()) {
    INFO("seed " << seed);
    std::mt19937_64 rng(seed);
    for (const Shape& s : shapes) {
      for (float sharpness : {1.0f, 4.0f}) {  // flat and peaked softmax
        const auto q = ll::test::random_uniform(rng, size_t(s.n * s.h * s.hd), -sharpness,
                                                sharpness);                        // [N, H, hd]
        const auto k = ll::test::random_uniform(rng, size_t(s.n * s.hkv * s.hd));  // [N, Hkv, hd]
        const auto v = ll::test::random_uniform(rng, size_t(s.n * s.hkv * s.hd));  // [N, Hkv, hd]
        const Heads heads = split_heads(s, q, k, v);
        for (AttnMode mode : {AttnMode::Dense, AttnMode::S2, AttnMode::S2Roll}) {
          INFO("N=" << s.n << " H=" << s.h << " Hkv=" << s.hkv << " hd=" << s.hd << " G=" << s.g
                    << " mode " << std::string(mode_name(mode)) << " sharpness " << sharpness);
          const Result ref = reference(s, mode, heads);
          const ll::AttentionPattern mask{mode, s.n, s.g, s.h};
          auto out = ll::test::poisoned(size_t(s.n * s.h * s.hd));  // [N, H, hd]
          auto lse = ll::test::poisoned(size_t(s.h * s.n));         // [H, N]
          ll::cpu::attention_forward(out.data(), lse.data(), q.data(), k.data(), v.data(), s.n, s.h,
                                     s.hkv, s.hd, mask);
          ll::test::check_close(out, ref.out, 1e-6, 1e-5);
          ll::test::check_close(lse, ref.lse, 1e-6, 1e-6);

          // lse is optional and does not change the output.
          auto out2 = ll::test::poisoned(out.size());
          ll::cpu::attention_forward(out2.data(), nullptr, q.data(), k.data(), v.data(), s.n, s.h,
                                     s.hkv, s.hd, mask);
          CHECK(out2 == out);
        }
      }
    }
  }
}

TEST_CASE("attention_forward rejects inconsistent shapes and masks") {
  const int64_t n = 8, hd = 4;
  std::vector<float> q(size_t(n * 4 * hd), 0.5f), kv(size_t(n * 4 * hd), 0.5f);
  std::vector<float> out(q.size());
  auto run = [&](int64_t h, int64_t hkv, ll::AttentionPattern mask) {
    ll::cpu::attention_forward(out.data(), nullptr, q.data(), kv.data(), kv.data(), n, h, hkv, hd,
                               mask);
  };
  CHECK_NOTHROW(run(4, 2, {AttnMode::S2, n, 4, 4}));
  CHECK_THROWS_AS(run(4, 2, {AttnMode::Dense, n + 1, 0, 4}), ll::Error);  // seq_len != N
  CHECK_THROWS_AS(run(4, 2, {AttnMode::S2, n, 4, 2}), ll::Error);         // n_heads != H
  CHECK_THROWS_AS(run(4, 2, {AttnMode::Dense, n, 0, 2}), ll::Error);      // n_heads != H
  CHECK_THROWS_AS(run(4, 3, {AttnMode::Dense, n, 0, 4}), ll::Error);      // H % Hkv != 0
  CHECK_THROWS_AS(run(3, 3, {AttnMode::S2, n, 4, 3}), ll::Error);         // odd H for S2
  CHECK_THROWS_AS(run(4, 2, {AttnMode::S2Roll, n, 3, 4}), ll::Error);     // odd G
  CHECK_THROWS_AS(run(4, 2, {AttnMode::S2, n, 0, 4}), ll::Error);         // G < 2
}

}  // namespace
