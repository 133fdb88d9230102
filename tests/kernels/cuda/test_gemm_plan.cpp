// kernels/cuda/gemm_plan.h on the CPU: the row-major -> column-major mapping is checked by
// running a naive BLAS column-major GEMM on the description it produces and comparing with a
// naive row-major op(A) @ op(B); also shape validation, alignment classes and the plan cache.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda/gemm_plan.h"

namespace {
using ll::cuda::ColumnMajorGemm;
using ll::cuda::GemmMatrix;
using ll::cuda::GemmType;
using ll::cuda::LtLayout;

const double kNaN = std::numeric_limits<double>::quiet_NaN();
const double kSentinel = 12345.0;

// A row-major host matrix [rows, cols] in rows * ld doubles; the padding holds `pad`.
struct HostMatrix {
  int64_t rows, cols, ld;
  std::vector<double> v;  // [rows, ld]
  double at(int64_t r, int64_t c) const { return v[size_t(r * ld + c)]; }
};

HostMatrix random_matrix(std::mt19937_64& rng, int64_t rows, int64_t cols, int64_t ld, double pad) {
  std::uniform_real_distribution<double> dist(-1.0, 1.0);
  HostMatrix m{rows, cols, ld, std::vector<double>(size_t(std::max<int64_t>(rows * ld, 1)), pad)};
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) m.v[size_t(r * ld + c)] = dist(rng);
  return m;
}

// The descriptor the mapping sees; the type is only validated, the data are doubles here.
GemmMatrix view(const HostMatrix& m, GemmType type = GemmType::BF16) {
  return GemmMatrix{m.v.data(), type, m.rows, m.cols, m.ld};
}

// op(X)(i, j) of a row-major matrix.
double op_at(const HostMatrix& x, bool trans, int64_t i, int64_t j) {
  return trans ? x.at(j, i) : x.at(i, j);
}

// Column-major element (r, c) of a layout, inside its bounds only.
double lt_at(const LtLayout& l, int64_t r, int64_t c) {
  REQUIRE(r >= 0);
  REQUIRE(r < l.rows);
  REQUIRE(c >= 0);
  REQUIRE(c < l.cols);
  return static_cast<const double*>(l.data)[r + c * l.ld];
}

// C = op(A) @ op(B) exactly as BLAS defines it for column-major operands:
// op(A)(i, l) = transa ? A[l + i * lda] : A[i + l * lda], A stored [transa ? k : m, transa ? m :
// k].
void naive_column_major_gemm(const ColumnMajorGemm& g) {
  REQUIRE(g.a.rows == (g.transa ? g.k : g.m));
  REQUIRE(g.a.cols == (g.transa ? g.m : g.k));
  REQUIRE(g.b.rows == (g.transb ? g.n : g.k));
  REQUIRE(g.b.cols == (g.transb ? g.k : g.n));
  REQUIRE(g.d.rows == g.m);
  REQUIRE(g.d.cols == g.n);
  for (const LtLayout* l : {&g.a, &g.b, &g.d}) REQUIRE(l->ld >= std::max<int64_t>(l->rows, 1));
  auto* d = static_cast<double*>(const_cast<void*>(g.d.data));
  for (int64_t j = 0; j < g.n; ++j) {
    for (int64_t i = 0; i < g.m; ++i) {
      double s = 0.0;
      for (int64_t l = 0; l < g.k; ++l) {
        const double av = g.transa ? lt_at(g.a, l, i) : lt_at(g.a, i, l);
        const double bv = g.transb ? lt_at(g.b, j, l) : lt_at(g.b, l, j);
        s += av * bv;
      }
      d[i + j * g.d.ld] = s;
    }
  }
}

struct Dims {
  int64_t m, n, k;
};
const Dims kDims[] = {{1, 1, 1}, {7, 5, 3}, {3, 7, 5}, {5, 3, 7}, {1, 9, 4}, {6, 1, 2}, {4, 4, 1}};
}  // namespace

TEST_CASE(
    "gemm mapping: BLAS column-major on the mapped description equals row-major op(A)@op(B)") {
  std::mt19937_64 rng(20240611);
  for (const Dims s : kDims) {
    for (const int64_t pad : {0, 2}) {
      for (const bool ta : {false, true}) {
        for (const bool tb : {false, true}) {
          INFO("M " << s.m << " N " << s.n << " K " << s.k << " pad " << pad << " trans_a " << ta
                    << " trans_b " << tb);
          // Stored shapes: A [M, K] or [K, M]; B [K, N] or [N, K]. Padding is NaN in the inputs
          // (any read of it shows) and a sentinel in D (any write to it shows).
          const int64_t ar = ta ? s.k : s.m, ac = ta ? s.m : s.k;
          const int64_t br = tb ? s.n : s.k, bc = tb ? s.k : s.n;
          const HostMatrix a = random_matrix(rng, ar, ac, ac + pad, kNaN);
          const HostMatrix b = random_matrix(rng, br, bc, bc + pad + 1, kNaN);
          HostMatrix d{s.m, s.n, s.n + pad,
                       std::vector<double>(size_t(s.m * (s.n + pad)), kSentinel)};
          for (int64_t i = 0; i < s.m; ++i)
            for (int64_t j = 0; j < s.n; ++j) d.v[size_t(i * d.ld + j)] = kNaN;

          const ColumnMajorGemm g = ll::cuda::to_column_major(view(d), view(a), ta, view(b), tb);
          CHECK(g.a.data == b.v.data());  // cuBLASLt's A is our B
          CHECK(g.b.data == a.v.data());
          CHECK(g.d.data == d.v.data());
          naive_column_major_gemm(g);

          for (int64_t i = 0; i < s.m; ++i) {
            for (int64_t j = 0; j < d.ld; ++j) {
              const double got = d.at(i, j);
              if (j >= s.n) {
                REQUIRE(got == kSentinel);
                continue;
              }
              double ref = 0.0;
              for (int64_t l = 0; l < s.k; ++l) ref += op_at(a, ta, i, l) * op_at(b, tb, l, j);
              REQUIRE(std::isfinite(got));
              REQUIRE(std::fabs(got - ref) <= 1e-12);
            }
          }
        }
      }
    }
  }
}

TEST_CASE("gemm mapping: bad shapes, types and pointers throw") {
  using ll::cuda::to_column_major;
  alignas(256) static uint8_t buf[4096];
  const GemmMatrix a{buf, GemmType::BF16, 7, 3, 3};  // [7, 3]
  const GemmMatrix b{buf, GemmType::BF16, 3, 5, 5};  // [3, 5]
  const GemmMatrix d{buf, GemmType::F32, 7, 5, 5};   // [7, 5]
  CHECK_NOTHROW(to_column_major(d, a, false, b, false));
  CHECK_NOTHROW(to_column_major({buf, GemmType::BF16, 7, 5, 5}, a, false, b, false));
  // Inner dimensions differ.
  CHECK_THROWS_AS(to_column_major(d, a, false, b, true), ll::Error);
  CHECK_THROWS_WITH_AS(to_column_major(d, a, false, {buf, GemmType::BF16, 4, 5, 5}, false),
                       doctest::Contains("inner dimensions"), ll::Error);
  // D not [M, N].
  CHECK_THROWS_AS(to_column_major({buf, GemmType::F32, 5, 7, 7}, a, false, b, false), ll::Error);
  CHECK_THROWS_AS(to_column_major({buf, GemmType::F32, 7, 4, 5}, a, false, b, false), ll::Error);
  // ld < cols.
  CHECK_THROWS_WITH_AS(to_column_major(d, {buf, GemmType::BF16, 7, 3, 2}, false, b, false),
                       doctest::Contains("ld 2 < cols 3"), ll::Error);
  CHECK_THROWS_AS(to_column_major({buf, GemmType::F32, 7, 5, 4}, a, false, b, false), ll::Error);
  // Unsupported types: A or B f32.
  CHECK_THROWS_AS(to_column_major(d, {buf, GemmType::F32, 7, 3, 3}, false, b, false), ll::Error);
  CHECK_THROWS_AS(to_column_major(d, a, false, {buf, GemmType::F32, 3, 5, 5}, false), ll::Error);
  // Null pointers with a non-zero size; null is fine for an empty matrix.
  CHECK_THROWS_WITH_AS(to_column_major(d, {nullptr, GemmType::BF16, 7, 3, 3}, false, b, false),
                       doctest::Contains("null"), ll::Error);
  CHECK_THROWS_AS(to_column_major({nullptr, GemmType::F32, 7, 5, 5}, a, false, b, false),
                  ll::Error);
  CHECK_NOTHROW(to_column_major(d, {nullptr, GemmType::BF16, 7, 0, 0}, false,
                                {nullptr, GemmType::BF16, 0, 5, 5}, false));
  // Negative shapes; pointers not aligned to the element size.
  CHECK_THROWS_AS(to_column_major({buf, GemmType::F32, -7, 5, 5}, {buf, GemmType::BF16, -7, 3, 3},
                                  false, b, false),
                  ll::Error);
  CHECK_THROWS_AS(to_column_major(d, {buf + 1, GemmType::BF16, 7, 3, 3}, false, b, false),
                  ll::Error);
  CHECK_THROWS_AS(to_column_major({buf + 2, GemmType::F32, 7, 5, 5}, a, false, b, false),
                  ll::Error);
  CHECK_NOTHROW(to_column_major({buf + 4, GemmType::F32, 7, 5, 5},
                                {buf + 2, GemmType::BF16, 7, 3, 3}, false, b, false));
}

TEST_CASE("gemm alignment_class is min(256, largest power of two dividing the address)") {
  using ll::cuda::alignment_class;
  const auto at = [](uintptr_t addr) {
    return alignment_class(reinterpret_cast<const void*>(addr));
  };
  CHECK(alignment_class(nullptr) == 256);
  CHECK(at(0x1) == 1);
  CHECK(at(0x102) == 2);
  CHECK(at(0x104) == 4);
  CHECK(at(0x1008) == 8);
  CHECK(at(0x1010) == 16);
  CHECK(at(0x180) == 128);
  CHECK(at(0x100) == 256);
  CHECK(at(0x7f0000000000) == 256);
  CHECK(at(0x7f0000000042) == 2);
}

TEST_CASE("gemm plan cache: the same key hits, a different ld, type or alignment misses") {
  using ll::cuda::GemmPlanKey;
  using ll::cuda::make_plan_key;
  using ll::cuda::to_column_major;
  alignas(256) static uint8_t buf[1 << 16];
  const GemmMatrix a{buf, GemmType::BF16, 37, 19, 19};         // [M, K]
  const GemmMatrix b{buf + 4096, GemmType::BF16, 19, 45, 48};  // [K, N], ld > cols
  const GemmMatrix d{buf + 8192, GemmType::BF16, 37, 45, 45};  // [M, N]
  const auto key_of = [](const GemmMatrix& dd, const GemmMatrix& aa, const GemmMatrix& bb) {
    return make_plan_key(to_column_major(dd, aa, false, bb, false));
  };
  const GemmPlanKey base = key_of(d, a, b);
  CHECK(base.m == 45);
  CHECK(base.n == 37);
  CHECK(base.k == 19);
  CHECK(base.lda == 48);  // cuBLASLt's A is our B
  CHECK(base.ldb == 19);
  CHECK(base.align_a == 256);

  ll::cuda::PlanCache<GemmPlanKey, int, ll::cuda::GemmPlanKeyHash> cache;
  int builds = 0;
  const auto get = [&](const GemmPlanKey& key) {
    return cache.get_or_build(key, [&] { return ++builds; });
  };
  CHECK(get(base) == 1);
  CHECK(get(base) == 1);
  CHECK(cache.built() == 1);
  CHECK(cache.hits() == 1);
  // Other pointers in the same alignment class: the same plan.
  CHECK(get(key_of({buf + 256, GemmType::BF16, 37, 45, 45}, a, b)) == 1);
  // A different ld, output type, alignment or transpose: new plans.
  CHECK(get(key_of({buf + 8192, GemmType::BF16, 37, 45, 46}, a, b)) == 2);
  CHECK(get(key_of({buf + 8192, GemmType::F32, 37, 45, 45}, a, b)) == 3);
  CHECK(get(key_of(d, {buf + 2, GemmType::BF16, 37, 19, 19}, b)) == 4);
  CHECK(get(key_of(d, a, {buf + 4096 + 16, GemmType::BF16, 19, 45, 48})) == 5);
  CHECK(get(make_plan_key(to_column_major(d, {buf, GemmType::BF16, 19, 37, 37}, true, b, false))) ==
        6);
  CHECK(cache.built() == 6);
  CHECK(cache.hits() == 2);
  CHECK(cache.size() == 6);
  CHECK(get(base) == 1);
  CHECK(cache.hits() == 3);

  // A builder that throws inserts nothing; the next call builds.
  GemmPlanKey other = base;
  other.k = 20;
  CHECK_THROWS_AS(cache.get_or_build(other, []() -> int { ll::fail("no algorithm"); }), ll::Error);
  CHECK(cache.built() == 6);
  CHECK(cache.size() == 6);
  CHECK(get(other) == 7);
  CHECK(cache.built() == 7);

  // Bounded: SFT gives every example its own M. A miss on a full cache drops the old plans
  // (after the new one is built, so a throwing builder still changes nothing).
  ll::cuda::PlanCache<GemmPlanKey, int, ll::cuda::GemmPlanKeyHash> small(3);
  int small_builds = 0;
  const auto get_small = [&](int64_t m) {
    GemmPlanKey key = base;
    key.m = m;
    return small.get_or_build(key, [&] { return ++small_builds; });
  };
  for (int64_t m = 1; m <= 3; ++m) CHECK(get_small(m) == int(m));
  CHECK(small.size() == 3);
  CHECK(small.flushes() == 0);
  CHECK(get_small(2) == 2);  // a hit on a full cache keeps it
  CHECK_THROWS_AS(small.get_or_build(base, []() -> int { ll::fail("no algorithm"); }), ll::Error);
  CHECK(small.size() == 3);
  CHECK(get_small(4) == 4);  // the fourth shape: the others are dropped
  CHECK(small.flushes() == 1);
  CHECK(small.size() == 1);
  CHECK(get_small(1) == 5);  // rebuilt
  CHECK(small.size() == 2);
  for (int64_t m = 100; m < 1100; ++m) get_small(m);
  CHECK(small.size() <= 3);
  CHECK(small.built() == 1005);

  // Equal keys hash equally; every field takes part in equality.
  const ll::cuda::GemmPlanKeyHash hash;
  CHECK(hash(key_of(d, a, b)) == hash(base));
  GemmPlanKey changed = base;
  changed.align_d = 128;
  CHECK_FALSE(changed == base);
  changed = base;
  changed.transb = true;
  CHECK_FALSE(changed == base);
  cache.clear();
  CHECK(cache.size() == 0);
}
