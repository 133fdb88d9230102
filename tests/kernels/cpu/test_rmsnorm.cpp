// RMSNorm against a double reference; saved rstd; in-place use; large and tiny magnitudes.
#include <doctest/doctest.h>

#include "kernels/cpu/rmsnorm.h"
#include "tests/kernels/kernel_test_util.h"

namespace {

struct Ref {
  std::vector<double> out;   // [N, D]
  std::vector<double> rstd;  // [N]
};

Ref reference(const std::vector<float>& x, const std::vector<float>& w, int64_t n, int64_t d,
              double eps) {
  Ref r{std::vector<double>(size_t(n * d)), std::vector<double>(size_t(n))};
  for (int64_t i = 0; i < n; ++i) {
    double ss = 0.0;
    for (int64_t j = 0; j < d; ++j) ss += double(x[size_t(i * d + j)]) * x[size_t(i * d + j)];
    const double rs = 1.0 / std::sqrt(ss / double(d) + eps);
    r.rstd[size_t(i)] = rs;
    for (int64_t j = 0; j < d; ++j)
      r.out[size_t(i * d + j)] = double(x[size_t(i * d + j)]) * rs * double(w[size_t(j)]);
  }
  return r;
}

TEST_CASE("rmsnorm_forward matches x * rsqrt(mean(x^2) + eps) * w") {
  struct Shape {
    int64_t n, d;
    float magnitude, eps;
  };
  for (uint64_t seed : ll::test::test_seeds()) {
    INFO("seed " << seed);
    std::mt19937_64 rng(seed);
    for (auto [n, d, magnitude, eps] : {Shape{1, 1, 1.0f, 1e-5f},
                                        {5, 7, 1.0f, 1e-6f},
                                        {33, 64, 1.0f, 1e-5f},
                                        {3, 4099, 1.0f, 1e-5f},
                                        {8, 256, 1000.0f, 1e-5f},
                                        {8, 256, 1e-2f, 1e-5f}}) {
      CAPTURE(n);
      CAPTURE(d);
      CAPTURE(magnitude);
      const auto x = ll::test::random_uniform(rng, size_t(n * d), -magnitude, magnitude);
      const auto w = ll::test::random_uniform(rng, size_t(d), 0.5f, 1.5f);  // [D]
      const Ref ref = reference(x, w, n, d, double(eps));

      auto out = ll::test::poisoned(size_t(n * d));  // [N, D]
      auto rstd = ll::test::poisoned(size_t(n));     // [N]
      ll::cpu::rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), n, d, eps);
      ll::test::check_close(out, ref.out, 1e-6, 1e-6);
      ll::test::check_close(rstd, ref.rstd, 0.0, 1e-6);

      // In place (out aliases x) and without rstd, as the model calls it.
      auto inplace = x;
      ll::cpu::rmsnorm_forward(inplace.data(), nullptr, inplace.data(), w.data(), n, d, eps);
      CHECK(inplace == out);
    }
  }
}

TEST_CASE("rmsnorm_forward of a zero row is zero (eps keeps it finite)") {
  const std::vector<float> x(16, 0.0f), w(16, 1.0f);
  auto out = ll::test::poisoned(16);
  auto rstd = ll::test::poisoned(1);
  ll::cpu::rmsnorm_forward(out.data(), rstd.data(), x.data(), w.data(), 1, 16, 1e-5f);
  for (float v : out) CHECK(v == 0.0f);
  CHECK(rstd[0] == doctest::Approx(1.0 / std::sqrt(1e-5)).epsilon(1e-6));
}

}  // namespace
