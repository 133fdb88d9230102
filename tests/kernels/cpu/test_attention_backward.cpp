// attention_backward (dense, S2, S2Roll; MHA/GQA/MQA) against central finite differences of
// L = sum(dout * out) through a double-precision forward written here from the S2-Attn
// definition (DESIGN.md section 3), not from kernels/attention_pattern.h. Also: bitwise
// determinism across thread counts, and exact zeros where no query reaches a key.
#include <doctest/doctest.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "common/error.h"
#include "kernels/cpu/attention.h"
#include "tests/kernels/kernel_test_util.h"

namespace {

using ll::AttnMode;

struct Shape {
  int64_t n, h, hkv, hd, g;
};

const char* mode_name(AttnMode m) {
  return m == AttnMode::Dense ? "dense" : m == AttnMode::S2 ? "s2" : "s2roll";
}

// Whether query i of head h attends to key j, straight from the definition: dense causal;
// heads [0, H/2) causal inside [0,G), [G,2G), ...; heads [H/2, H) inside [0,G/2), [G/2,3G/2), ...
// (S2), or, for S2Roll, causal inside groups of G of the sequence rolled by -G/2 with wrap-around.
bool sees(const Shape& s, AttnMode mode, int64_t h, int64_t i, int64_t j) {
  if (mode == AttnMode::Dense) return j <= i;
  const int64_t half = s.g / 2;
  if (h < s.h / 2) return j <= i && i / s.g == j / s.g;
  if (mode == AttnMode::S2) {
    auto segment = [&](int64_t t) { return t < half ? int64_t(0) : 1 + (t - half) / s.g; };
    return j <= i && segment(i) == segment(j);
  }
  auto rolled = [&](int64_t t) { return ((t - half) % s.n + s.n) % s.n; };
  return rolled(j) <= rolled(i) && rolled(i) / s.g == rolled(j) / s.g;
}

struct Inputs {
  std::vector<double> q, k, v;  // [N, H, hd], [N, Hkv, hd], [N, Hkv, hd]
};

// Double forward of heads [h0, h1): out [N, H, hd] and lse [H, N] for those heads (others are
// left as they are); returns sum(dout * out) over those heads.
double forward_f64(const Shape& s, AttnMode mode, const Inputs& x, const std::vector<float>& dout,
                   int64_t h0, int64_t h1, std::vector<double>* out = nullptr,
                   std::vector<double>* lse = nullptr) {
  // The kernel scales by the fp32 value of hd**-0.5; use exactly that number.
  const double kscale = double(float(1.0 / std::sqrt(double(s.hd))));
  double loss = 0.0;
  std::vector<double> p(size_t(s.n));  // [N] probabilities of one row
  for (int64_t h = h0; h < h1; ++h) {
    const int64_t kvh = h / (s.h / s.hkv);
    for (int64_t i = 0; i < s.n; ++i) {
      double mx = -std::numeric_limits<double>::infinity();
      for (int64_t j = 0; j < s.n; ++j) {
        if (!sees(s, mode, h, i, j)) continue;
        double dot = 0.0;
        for (int64_t d = 0; d < s.hd; ++d)
          dot += x.q[size_t((i * s.h + h) * s.hd + d)] * x.k[size_t((j * s.hkv + kvh) * s.hd + d)];
        p[size_t(j)] = dot * kscale;
        mx = std::max(mx, p[size_t(j)]);
      }
      double sum = 0.0;
      for (int64_t j = 0; j < s.n; ++j)
        if (sees(s, mode, h, i, j)) sum += (p[size_t(j)] = std::exp(p[size_t(j)] - mx));
      for (int64_t d = 0; d < s.hd; ++d) {
        double o = 0.0;
        for (int64_t j = 0; j < s.n; ++j)
          if (sees(s, mode, h, i, j)) o += p[size_t(j)] * x.v[size_t((j * s.hkv + kvh) * s.hd + d)];
        o /= sum;
        const size_t at = size_t((i * s.h + h) * s.hd + d);
        loss += double(dout[at]) * o;
        if (out != nullptr) (*out)[at] = o;
      }
      if (lse != nullptr) (*lse)[size_t(h * s.n + i)] = mx + std::log(sum);
    }
  }
  return loss;
}

// d sum(dout * out) / d x for every element of x (x is one of in.q, in.k, in.v) by central
// differences; heads_of(e) gives the query heads [h0, h1) that element e feeds.
template <typename HeadsOf>
std::vector<double> finite_differences(const Shape& s, AttnMode mode, Inputs& in,
                                       std::vector<double>& x, const std::vector<float>& dout,
                                       HeadsOf heads_of) {
  std::vector<double> grad(x.size());
  for (size_t e = 0; e < x.size(); ++e) {
    const auto [h0, h1] = heads_of(int64_t(e));
    // The double forward is exact to ~1e-16, so a small step keeps truncation error ~1e-10.
    const double step = 1e-5, x0 = x[e];
    x[e] = x0 + step;
    const double up = forward_f64(s, mode, in, dout, h0, h1);
    x[e] = x0 - step;
    const double down = forward_f64(s, mode, in, dout, h0, h1);
    x[e] = x0;
    grad[e] = (up - down) / (2.0 * step);
  }
  return grad;
}

// Largest |ref|: the per-element absolute tolerance is relative to the gradient's scale, since
// single elements can be near zero by cancellation.
double max_abs(const std::vector<double>& x) {
  double m = 0.0;
  for (double v : x) m = std::max(m, std::fabs(v));
  return m;
}

struct Grads {
  std::vector<float> dq, dk, dv;
};

Grads run_backward(const Shape& s, AttnMode mode, const std::vector<float>& q,
                   const std::vector<float>& k, const std::vector<float>& v,
                   const std::vector<float>& dout, std::vector<float>* out_saved = nullptr,
                   std::vector<float>* lse_saved = nullptr) {
  const ll::AttentionPattern mask{mode, s.n, s.g, s.h};
  auto out = ll::test::poisoned(size_t(s.n * s.h * s.hd));  // [N, H, hd]
  auto lse = ll::test::poisoned(size_t(s.h * s.n));         // [H, N]
  ll::cpu::attention_forward(out.data(), lse.data(), q.data(), k.data(), v.data(), s.n, s.h, s.hkv,
                             s.hd, mask);
  Grads g{ll::test::poisoned(q.size()), ll::test::poisoned(k.size()), ll::test::poisoned(v.size())};
  ll::cpu::attention_backward(g.dq.data(), g.dk.data(), g.dv.data(), dout.data(), q.data(),
                              k.data(), v.data(), out.data(), lse.data(), s.n, s.h, s.hkv, s.hd,
                              mask);
  if (out_saved != nullptr) *out_saved = out;
  if (lse_saved != nullptr) *lse_saved = lse;
  return g;
}

std::vector<double> to_f64(const std::vector<float>& x) { return {x.begin(), x.end()}; }

TEST_CASE("attention_backward matches finite differences of the S2-Attn forward") {
  const Shape shapes[] = {
      {16, 4, 2, 8, 4},   // N divisible by G, GQA 4:2
      {13, 4, 1, 4, 4},   // ragged last segment (13 = 3*4 + 1), MQA
      {10, 4, 4, 8, 6},   // ragged (10 = 6 + 4), MHA, G/2 = 3
      {13, 4, 2, 4, 6},   // ragged, G/2 does not divide N either
      {3, 4, 2, 8, 8},    // N < G/2: one (clipped) segment everywhere
      {12, 2, 1, 8, 12},  // G = N, one head per half
      {9, 2, 2, 4, 2},    // G = 2: one- and two-token segments
  };
  for (uint64_t seed : ll::test::test_seeds()) {
    INFO("seed " << seed);
    std::mt19937_64 rng(seed);
    for (const Shape& s : shapes) {
      for (float sharpness : {1.0f, 3.0f}) {  // flat and peaked softmax
        const auto q = ll::test::random_uniform(rng, size_t(s.n * s.h * s.hd), -sharpness,
                                                sharpness);                         // [N, H, hd]
        const auto k = ll::test::random_uniform(rng, size_t(s.n * s.hkv * s.hd));   // [N, Hkv, hd]
        const auto v = ll::test::random_uniform(rng, size_t(s.n * s.hkv * s.hd));   // [N, Hkv, hd]
        const auto dout = ll::test::random_uniform(rng, size_t(s.n * s.h * s.hd));  // [N, H, hd]
        for (AttnMode mode : {AttnMode::Dense, AttnMode::S2, AttnMode::S2Roll}) {
          INFO("N=" << s.n << " H=" << s.h << " Hkv=" << s.hkv << " hd=" << s.hd << " G=" << s.g
                    << " mode " << std::string(mode_name(mode)) << " sharpness " << sharpness);
          std::vector<float> out, lse;
          const Grads g = run_backward(s, mode, q, k, v, dout, &out, &lse);

          // The double forward used for the differences agrees with the kernel's forward.
          Inputs in{to_f64(q), to_f64(k), to_f64(v)};
          std::vector<double> ref_out(out.size()), ref_lse(lse.size());
          forward_f64(s, mode, in, dout, 0, s.h, &ref_out, &ref_lse);
          ll::test::check_close(out, ref_out, 1e-6, 1e-5);
          ll::test::check_close(lse, ref_lse, 1e-6, 1e-6);

          const int64_t hpk = s.h / s.hkv;
          const auto fd_q = finite_differences(s, mode, in, in.q, dout, [&](int64_t e) {
            const int64_t h = (e / s.hd) % s.h;
            return std::pair{h, h + 1};
          });
          const auto kv_heads = [&](int64_t e) {
            const int64_t kvh = (e / s.hd) % s.hkv;
            return std::pair{kvh * hpk, (kvh + 1) * hpk};
          };
          const auto fd_k = finite_differences(s, mode, in, in.k, dout, kv_heads);
          const auto fd_v = finite_differences(s, mode, in, in.v, dout, kv_heads);
          {
            INFO("dq");
            ll::test::check_close(g.dq, fd_q, 5e-7 * max_abs(fd_q), 5e-6, 1e-6);
          }
          {
            INFO("dk");
            ll::test::check_close(g.dk, fd_k, 5e-7 * max_abs(fd_k), 5e-6, 1e-6);
          }
          {
            INFO("dv");
            ll::test::check_close(g.dv, fd_v, 5e-7 * max_abs(fd_v), 5e-6, 1e-6);
          }
        }
      }
    }
  }
}

TEST_CASE("attention_backward is bitwise identical across runs and thread counts") {
  const Shape s{203, 8, 2, 16, 32};  // ragged last segment, GQA
  const int saved_threads = omp_get_max_threads();
  for (uint64_t seed : ll::test::test_seeds()) {
    INFO("seed " << seed);
    std::mt19937_64 rng(seed);
    const auto q = ll::test::random_uniform(rng, size_t(s.n * s.h * s.hd), -2.0f, 2.0f);
    const auto k = ll::test::random_uniform(rng, size_t(s.n * s.hkv * s.hd));
    const auto v = ll::test::random_uniform(rng, size_t(s.n * s.hkv * s.hd));
    const auto dout = ll::test::random_uniform(rng, size_t(s.n * s.h * s.hd));
    for (AttnMode mode : {AttnMode::Dense, AttnMode::S2, AttnMode::S2Roll}) {
      INFO("mode " << std::string(mode_name(mode)));
      omp_set_num_threads(1);
      const Grads one = run_backward(s, mode, q, k, v, dout);
      for (int threads : {3, 2, std::max(saved_threads, 4), 1}) {
        INFO(threads << " threads");
        omp_set_num_threads(threads);
        const Grads many = run_backward(s, mode, q, k, v, dout);
        auto same = [](const std::vector<float>& a, const std::vector<float>& b) {
          return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
        };
        CHECK(same(one.dq, many.dq));
        CHECK(same(one.dk, many.dk));
        CHECK(same(one.dv, many.dv));
      }
    }
  }
  omp_set_num_threads(saved_threads);
}

TEST_CASE("attention_backward: keys no query with a gradient sees get exactly zero") {
  // dout is nonzero only for queries [a, b); a key of kv head c gets dk = dv = 0 exactly unless
  // some query in [a, b) of a head reading c sees it (then dv is generically nonzero). With
  // [a, b) = [0, G/2) the S2Roll leak shows: its shifted heads' first queries see the last keys.
  const Shape shapes[] = {{24, 4, 2, 4, 8}, {26, 4, 1, 8, 8}, {24, 4, 4, 4, 6}};
  for (uint64_t seed : ll::test::test_seeds()) {
    INFO("seed " << seed);
    std::mt19937_64 rng(seed);
    for (const Shape& s : shapes) {
      const auto q = ll::test::random_uniform(rng, size_t(s.n * s.h * s.hd), -2.0f, 2.0f);
      const auto k = ll::test::random_uniform(rng, size_t(s.n * s.hkv * s.hd));
      const auto v = ll::test::random_uniform(rng, size_t(s.n * s.hkv * s.hd));
      for (auto [a, b] : {std::pair<int64_t, int64_t>{0, s.g / 2}, {s.g, 2 * s.g}, {5, 7}}) {
        auto dout = ll::test::random_uniform(rng, size_t(s.n * s.h * s.hd));
        for (int64_t i = 0; i < s.n; ++i)
          if (i < a || i >= b) std::fill_n(dout.begin() + i * s.h * s.hd, s.h * s.hd, 0.0f);
        for (AttnMode mode : {AttnMode::Dense, AttnMode::S2, AttnMode::S2Roll}) {
          INFO("N=" << s.n << " H=" << s.h << " Hkv=" << s.hkv << " G=" << s.g << " mode "
                    << std::string(mode_name(mode)) << " queries [" << a << ", " << b << ")");
          const Grads g = run_backward(s, mode, q, k, v, dout);
          const int64_t hpk = s.h / s.hkv;
          int64_t zero_keys = 0, leaked_keys = 0;
          for (int64_t c = 0; c < s.hkv; ++c) {
            for (int64_t j = 0; j < s.n; ++j) {
              bool reached = false;
              for (int64_t h = c * hpk; h < (c + 1) * hpk; ++h)
                for (int64_t i = a; i < b; ++i) reached = reached || sees(s, mode, h, i, j);
              double dk2 = 0.0, dv2 = 0.0;
              for (int64_t d = 0; d < s.hd; ++d) {
                const size_t at = size_t((j * s.hkv + c) * s.hd + d);
                REQUIRE(std::isfinite(g.dk[at]));
                REQUIRE(std::isfinite(g.dv[at]));
                dk2 += double(g.dk[at]) * g.dk[at];
                dv2 += double(g.dv[at]) * g.dv[at];
              }
              INFO("kv head " << c << " key " << j);
              if (reached) {
                CHECK(dv2 > 0.0);
                leaked_keys += j >= b;
              } else {
                CHECK(dk2 == 0.0);
                CHECK(dv2 == 0.0);
                ++zero_keys;
              }
            }
          }
          CHECK(zero_keys > 0);
          // Only the roll lets a query reach a later key.
          if (mode == AttnMode::S2Roll && a == 0) {
            CHECK(leaked_keys > 0);
          } else {
            CHECK(leaked_keys == 0);
          }
        }
      }
    }
  }
}

TEST_CASE("attention_backward: a query that sees only itself has dq exactly zero") {
  // A softmax over one key is the constant 1, so nothing flows back to that query: this holds
  // at each segment start, which pins down the segment boundaries of every mode.
  const Shape s{21, 4, 2, 4, 6};
  for (uint64_t seed : ll::test::test_seeds()) {
    INFO("seed " << seed);
    std::mt19937_64 rng(seed);
    const auto q = ll::test::random_uniform(rng, size_t(s.n * s.h * s.hd), -2.0f, 2.0f);
    const auto k = ll::test::random_uniform(rng, size_t(s.n * s.hkv * s.hd));
    const auto v = ll::test::random_uniform(rng, size_t(s.n * s.hkv * s.hd));
    const auto dout = ll::test::random_uniform(rng, size_t(s.n * s.h * s.hd));
    for (AttnMode mode : {AttnMode::Dense, AttnMode::S2, AttnMode::S2Roll}) {
      INFO("mode " << std::string(mode_name(mode)));
      const Grads g = run_backward(s, mode, q, k, v, dout);
      for (int64_t h = 0; h < s.h; ++h) {
        for (int64_t i = 0; i < s.n; ++i) {
          int64_t seen = 0;
          for (int64_t j = 0; j < s.n; ++j) seen += sees(s, mode, h, i, j);
          const float* dqi = g.dq.data() + (i * s.h + h) * s.hd;  // [hd]
          double dq2 = 0.0;
          for (int64_t d = 0; d < s.hd; ++d) dq2 += double(dqi[d]) * dqi[d];
          INFO("head " << h << " query " << i << " sees " << seen << " keys");
          if (seen == 1) {
            CHECK(dq2 == 0.0);
          } else {
            CHECK(dq2 > 0.0);
          }
        }
      }
    }
  }
}

TEST_CASE("attention_backward rejects inconsistent shapes and masks") {
  const int64_t n = 8, hd = 4;
  std::vector<float> x(size_t(n * 4 * hd), 0.5f), lse(size_t(4 * n), 1.0f);
  std::vector<float> dq(x.size()), dk(x.size()), dv(x.size());
  auto run = [&](int64_t tokens, int64_t h, int64_t hkv, ll::AttentionPattern mask) {
    ll::cpu::attention_backward(dq.data(), dk.data(), dv.data(), x.data(), x.data(), x.data(),
                                x.data(), x.data(), lse.data(), tokens, h, hkv, hd, mask);
  };
  CHECK_NOTHROW(run(n, 4, 2, {AttnMode::S2, n, 4, 4}));
  CHECK_NOTHROW(run(0, 4, 2, {AttnMode::S2Roll, 0, 4, 4}));                  // empty sequence
  CHECK_THROWS_AS(run(n, 4, 2, {AttnMode::Dense, n + 1, 0, 4}), ll::Error);  // seq_len != N
  CHECK_THROWS_AS(run(n, 4, 2, {AttnMode::S2, n, 4, 2}), ll::Error);         // n_heads != H
  CHECK_THROWS_AS(run(n, 4, 3, {AttnMode::Dense, n, 0, 4}), ll::Error);      // H % Hkv != 0
  CHECK_THROWS_AS(run(n, 3, 3, {AttnMode::S2, n, 4, 3}), ll::Error);         // odd H for S2
  CHECK_THROWS_AS(run(n, 4, 2, {AttnMode::S2Roll, n, 3, 4}), ll::Error);     // odd G
}

}  // namespace
