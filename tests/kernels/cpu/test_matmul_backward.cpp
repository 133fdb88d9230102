// matmul_forward_scaled, matmul_backward_input, matmul_backward_weight: against double
// analytic products, against central finite differences of a double forward, accumulate,
// NaN poison and empty reductions.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>

#include "kernels/cpu/matmul.h"
#include "tests/kernels/kernel_test_util.h"

namespace {

struct Shape {
  int64_t m, k, n_out;
};

struct Problem {
  int64_t m, k, n;
  std::vector<float> x;     // [M, K]
  std::vector<float> w;     // [Nout, K]
  std::vector<float> dout;  // [M, Nout]
};

Problem make_problem(std::mt19937_64& rng, Shape s) {
  return {s.m,
          s.k,
          s.n_out,
          ll::test::random_uniform(rng, size_t(s.m * s.k)),
          ll::test::random_uniform(rng, size_t(s.n_out * s.k)),
          ll::test::random_uniform(rng, size_t(s.m * s.n_out))};
}

// L = alpha * sum_{i,j} dout[i,j] * (x @ w^T)[i,j], in double: the scalar whose gradients
// the backward kernels compute.
double loss(const std::vector<double>& x, const std::vector<double>& w, const Problem& p,
            double alpha) {
  double total = 0.0;
  for (int64_t i = 0; i < p.m; ++i)
    for (int64_t j = 0; j < p.n; ++j) {
      double s = 0.0;
      for (int64_t q = 0; q < p.k; ++q) s += x[size_t(i * p.k + q)] * w[size_t(j * p.k + q)];
      total += double(p.dout[size_t(i * p.n + j)]) * s;
    }
  return alpha * total;
}

// Central differences of loss() with respect to every element of `wrt` (x or w).
std::vector<double> finite_difference(const Problem& p, double alpha, bool wrt_x) {
  std::vector<double> x(p.x.begin(), p.x.end()), w(p.w.begin(), p.w.end());
  std::vector<double>& v = wrt_x ? x : w;
  std::vector<double> grad(v.size());
  const double h = 1e-3;  // L is linear in each input: the difference is exact up to rounding
  for (size_t i = 0; i < v.size(); ++i) {
    const double keep = v[i];
    v[i] = keep + h;
    const double up = loss(x, w, p, alpha);
    v[i] = keep - h;
    const double down = loss(x, w, p, alpha);
    v[i] = keep;
    grad[i] = (up - down) / (2.0 * h);
  }
  return grad;
}

TEST_CASE("matmul_forward_scaled matches alpha * x @ w^T; alpha 1 is matmul_forward") {
  for (uint64_t seed : ll::test::test_seeds()) {
    INFO("seed " << seed);
    std::mt19937_64 rng(seed);
    for (Shape s : {Shape{1, 1, 1}, Shape{7, 13, 5}, Shape{33, 64, 17}, Shape{129, 37, 1}}) {
      for (float alpha : {1.0f, -0.37f, 2.5f}) {
        for (bool accumulate : {false, true}) {
          CAPTURE(s.m);
          CAPTURE(s.k);
          CAPTURE(s.n_out);
          CAPTURE(alpha);
          CAPTURE(accumulate);
          const Problem p = make_problem(rng, s);
          auto out = accumulate ? ll::test::random_uniform(rng, size_t(s.m * s.n_out))
                                : ll::test::poisoned(size_t(s.m * s.n_out));  // [M, Nout]
          std::vector<double> ref(out.size()), terms(out.size());             // [M, Nout]
          for (int64_t i = 0; i < s.m; ++i)
            for (int64_t j = 0; j < s.n_out; ++j) {
              double acc = 0.0;
              for (int64_t q = 0; q < s.k; ++q)
                acc += double(p.x[size_t(i * s.k + q)]) * double(p.w[size_t(j * s.k + q)]);
              const size_t o = size_t(i * s.n_out + j);
              ref[o] = (accumulate ? double(out[o]) : 0.0) + double(alpha) * acc;
              terms[o] = (accumulate ? std::fabs(double(out[o])) : 0.0) + std::fabs(alpha * acc);
            }
          auto plain = out;  // the same starting contents for matmul_forward
          ll::cpu::matmul_forward_scaled(out.data(), p.x.data(), p.w.data(), s.m, s.k, s.n_out,
                                         alpha, accumulate);
          ll::test::check_close(out, ref, 1.5e-6 * std::fabs(alpha) * std::sqrt(double(s.k)), 1e-6,
                                ll::test::rel_norm_tol_of_terms(ref, terms));
          if (alpha == 1.0f) {
            ll::cpu::matmul_forward(plain.data(), p.x.data(), p.w.data(), s.m, s.k, s.n_out,
                                    accumulate);
            CHECK(std::memcmp(plain.data(), out.data(), out.size() * sizeof(float)) == 0);
          }
        }
      }
    }
  }
}

TEST_CASE("matmul backward matches the analytic products alpha * dout @ w and dout^T @ x") {
  for (uint64_t seed : ll::test::test_seeds()) {
    INFO("seed " << seed);
    std::mt19937_64 rng(seed);
    for (Shape s : {Shape{1, 1, 1}, Shape{1, 64, 33}, Shape{7, 13, 5}, Shape{33, 64, 17},
                    Shape{64, 256, 96}, Shape{129, 37, 1}}) {
      for (float alpha : {1.0f, -0.37f}) {
        for (bool accumulate : {false, true}) {
          CAPTURE(s.m);
          CAPTURE(s.k);
          CAPTURE(s.n_out);
          CAPTURE(alpha);
          CAPTURE(accumulate);
          const Problem p = make_problem(rng, s);
          // Accumulate onto random contents; otherwise start from NaN, which must be ignored.
          auto dx = accumulate ? ll::test::random_uniform(rng, size_t(s.m * s.k))
                               : ll::test::poisoned(size_t(s.m * s.k));  // [M, K]
          auto dw = accumulate ? ll::test::random_uniform(rng, size_t(s.n_out * s.k))
                               : ll::test::poisoned(size_t(s.n_out * s.k));  // [Nout, K]
          std::vector<double> dx_ref(dx.size()), dw_ref(dw.size());
          // |prior| + |alpha * product| per element: fp32 rounding scales with the terms, not
          // with a result they cancel down to (accumulate onto random contents can).
          std::vector<double> dx_terms(dx.size()), dw_terms(dw.size());
          for (int64_t i = 0; i < s.m; ++i)
            for (int64_t q = 0; q < s.k; ++q) {
              double acc = 0.0;
              for (int64_t j = 0; j < s.n_out; ++j)
                acc += double(p.dout[size_t(i * s.n_out + j)]) * double(p.w[size_t(j * s.k + q)]);
              const size_t o = size_t(i * s.k + q);
              dx_ref[o] = (accumulate ? double(dx[o]) : 0.0) + double(alpha) * acc;
              dx_terms[o] = (accumulate ? std::fabs(double(dx[o])) : 0.0) + std::fabs(alpha * acc);
            }
          for (int64_t j = 0; j < s.n_out; ++j)
            for (int64_t q = 0; q < s.k; ++q) {
              double acc = 0.0;
              for (int64_t i = 0; i < s.m; ++i)
                acc += double(p.dout[size_t(i * s.n_out + j)]) * double(p.x[size_t(i * s.k + q)]);
              const size_t o = size_t(j * s.k + q);
              dw_ref[o] = (accumulate ? double(dw[o]) : 0.0) + double(alpha) * acc;
              dw_terms[o] = (accumulate ? std::fabs(double(dw[o])) : 0.0) + std::fabs(alpha * acc);
            }
          ll::cpu::matmul_backward_input(dx.data(), p.dout.data(), p.w.data(), s.m, s.k, s.n_out,
                                         alpha, accumulate);
          ll::cpu::matmul_backward_weight(dw.data(), p.dout.data(), p.x.data(), s.m, s.k, s.n_out,
                                          alpha, accumulate);
          // fp32 dot products: absolute error grows like sqrt(length) * eps * |terms|.
          {
            INFO("dx");
            ll::test::check_close(dx, dx_ref, 1.5e-6 * std::sqrt(double(s.n_out)), 1e-6,
                                  ll::test::rel_norm_tol_of_terms(dx_ref, dx_terms));
          }
          {
            INFO("dw");
            ll::test::check_close(dw, dw_ref, 1.5e-6 * std::sqrt(double(s.m)), 1e-6,
                                  ll::test::rel_norm_tol_of_terms(dw_ref, dw_terms));
          }
        }
      }
    }
  }
}

TEST_CASE("matmul backward equals central finite differences of alpha * sum(dout * x @ w^T)") {
  for (uint64_t seed : ll::test::test_seeds()) {
    INFO("seed " << seed);
    std::mt19937_64 rng(seed);
    for (Shape s : {Shape{1, 1, 1}, Shape{1, 9, 4}, Shape{7, 13, 5}, Shape{12, 5, 1}}) {
      for (float alpha : {1.0f, -0.37f}) {
        CAPTURE(s.m);
        CAPTURE(s.k);
        CAPTURE(s.n_out);
        CAPTURE(alpha);
        const Problem p = make_problem(rng, s);
        auto dx = ll::test::poisoned(size_t(s.m * s.k));      // [M, K]
        auto dw = ll::test::poisoned(size_t(s.n_out * s.k));  // [Nout, K]
        ll::cpu::matmul_backward_input(dx.data(), p.dout.data(), p.w.data(), s.m, s.k, s.n_out,
                                       alpha, false);
        ll::cpu::matmul_backward_weight(dw.data(), p.dout.data(), p.x.data(), s.m, s.k, s.n_out,
                                        alpha, false);
        {
          INFO("dx");
          ll::test::check_close(dx, finite_difference(p, alpha, true), 1e-6, 1e-6);
        }
        {
          INFO("dw");
          ll::test::check_close(dw, finite_difference(p, alpha, false), 1e-6, 1e-6);
        }
      }
    }
  }
}

TEST_CASE("matmul backward with an empty reduction writes zeros or leaves the gradient") {
  // dx sums over Nout, dw over M: with that size 0 the sum is 0.
  auto dx = ll::test::poisoned(6);  // [2, 3]
  ll::cpu::matmul_backward_input(dx.data(), nullptr, nullptr, 2, 3, 0, 1.0f, false);
  for (float v : dx) CHECK(v == 0.0f);
  std::vector<float> dx_acc(6, 2.5f);
  ll::cpu::matmul_backward_input(dx_acc.data(), nullptr, nullptr, 2, 3, 0, 1.0f, true);
  for (float v : dx_acc) CHECK(v == 2.5f);

  auto dw = ll::test::poisoned(12);  // [4, 3]
  ll::cpu::matmul_backward_weight(dw.data(), nullptr, nullptr, 0, 3, 4, 1.0f, false);
  for (float v : dw) CHECK(v == 0.0f);
  std::vector<float> dw_acc(12, -1.5f);
  ll::cpu::matmul_backward_weight(dw_acc.data(), nullptr, nullptr, 0, 3, 4, 1.0f, true);
  for (float v : dw_acc) CHECK(v == -1.5f);

  auto out = ll::test::poisoned(6);  // [2, 3]
  ll::cpu::matmul_forward_scaled(out.data(), nullptr, nullptr, 2, 0, 3, 3.0f, false);
  for (float v : out) CHECK(v == 0.0f);
}

}  // namespace
