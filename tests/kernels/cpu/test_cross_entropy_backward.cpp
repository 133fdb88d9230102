// classifier_forward_backward: the same losses as classifier_forward, and dx equal to central
// finite differences of loss_scale * sum of labelled losses (double-precision reference),
// for chunk sizes that do and do not divide N; unlabelled rows get 0; errors as the forward.
#include <doctest/doctest.h>

#include <cstring>
#include <string>

#include "common/error.h"
#include "kernels/cpu/cross_entropy.h"
#include "tests/kernels/cpu/classifier_problem.h"
#include "tests/kernels/kernel_test_util.h"

namespace {

using ll::test::make_problem;
using ll::test::Problem;

// loss of row i at hidden state xi [D], in double (logsumexp - logit[target]).
double row_loss(const Problem& p, const double* xi, int32_t target) {
  std::vector<double> logits(size_t(p.v));  // [V]
  double mx = -1e300;
  for (int64_t j = 0; j < p.v; ++j) {
    double s = 0.0;
    for (int64_t k = 0; k < p.d; ++k) s += xi[k] * double(p.lm_head[size_t(j * p.d + k)]);
    logits[size_t(j)] = s;
    mx = std::max(mx, s);
  }
  double sum = 0.0;
  for (double l : logits) sum += std::exp(l - mx);
  return mx + std::log(sum) - logits[size_t(target)];
}

// Central differences of loss_scale * sum of labelled losses with respect to x [N, D]; each
// row's loss depends only on its own x row. Step 1e-5 in double: truncation and rounding
// both below 1e-9.
std::vector<double> finite_difference(const Problem& p, double loss_scale) {
  std::vector<double> fd(size_t(p.n * p.d), 0.0);
  std::vector<double> xi(size_t(p.d));  // [D]
  const double h = 1e-5;
  for (int64_t i = 0; i < p.n; ++i) {
    const int32_t t = p.target[size_t(i)];
    if (t < 0) continue;  // not in the sum: zero gradient
    for (int64_t k = 0; k < p.d; ++k) xi[size_t(k)] = p.x[size_t(i * p.d + k)];
    for (int64_t k = 0; k < p.d; ++k) {
      const double keep = xi[size_t(k)];
      xi[size_t(k)] = keep + h;
      const double up = row_loss(p, xi.data(), t);
      xi[size_t(k)] = keep - h;
      const double down = row_loss(p, xi.data(), t);
      xi[size_t(k)] = keep;
      fd[size_t(i * p.d + k)] = loss_scale * (up - down) / (2.0 * h);
    }
  }
  return fd;
}

// sqrt(sum over labelled (i, k) of (|loss_scale| * sum_j |softmax_j - onehot_j| * |W_jk|)^2):
// the size of the terms each dx element sums, which the rounding errors scale with. Where
// they cancel (lm_head rows nearly equal) the error relative to dx grows by this over ||dx||.
double terms_norm(const Problem& p, double loss_scale) {
  double total = 0.0;
  std::vector<double> prob(size_t(p.v));  // [V]
  for (int64_t i = 0; i < p.n; ++i) {
    const int32_t t = p.target[size_t(i)];
    if (t < 0) continue;
    double mx = -1e300;
    for (int64_t j = 0; j < p.v; ++j) {
      double s = 0.0;
      for (int64_t k = 0; k < p.d; ++k)
        s += double(p.x[size_t(i * p.d + k)]) * double(p.lm_head[size_t(j * p.d + k)]);
      prob[size_t(j)] = s;
      mx = std::max(mx, s);
    }
    double sum = 0.0;
    for (double& l : prob) sum += (l = std::exp(l - mx));
    for (int64_t k = 0; k < p.d; ++k) {
      double mag = 0.0;
      for (int64_t j = 0; j < p.v; ++j)
        mag += std::fabs(prob[size_t(j)] / sum - (j == t ? 1.0 : 0.0)) *
               std::fabs(double(p.lm_head[size_t(j * p.d + k)]));
      total += (loss_scale * mag) * (loss_scale * mag);
    }
  }
  return std::sqrt(total);
}

TEST_CASE("classifier_forward_backward: forward's losses, dx by finite differences") {
  struct Shape {
    int64_t n, d, v;
  };
  for (uint64_t seed : ll::test::test_seeds()) {
    INFO("seed " << seed);
    std::mt19937_64 rng(seed);
    for (auto [n, d, v] : {Shape{1, 1, 2}, Shape{9, 7, 3}, Shape{13, 8, 37}, Shape{23, 16, 101}}) {
      CAPTURE(n);
      CAPTURE(d);
      CAPTURE(v);
      const Problem p = make_problem(rng, n, d, v);
      for (float loss_scale : {0.37f, -2.0f}) {
        CAPTURE(loss_scale);
        const auto fd = finite_difference(p, loss_scale);
        double fd_norm = 0.0;
        for (double g : fd) fd_norm += g * g;
        fd_norm = std::sqrt(fd_norm);
        const double cond =
            fd_norm > 0.0 ? std::max(1.0, terms_norm(p, loss_scale) / fd_norm) : 1.0;
        std::vector<float> first_dx;
        // 4 does not divide 9, 13 or 23; 1 is one row per chunk; n + 5 is one chunk.
        for (int64_t chunk : {int64_t(1), int64_t(4), n, n + 5}) {
          CAPTURE(chunk);
          auto losses_fwd = ll::test::poisoned(size_t(n));
          const int64_t count_fwd = ll::cpu::classifier_forward(
              losses_fwd.data(), p.x.data(), p.lm_head.data(), p.target.data(), n, d, v, chunk);
          auto losses = ll::test::poisoned(size_t(n));  // [N]
          auto dx = ll::test::poisoned(size_t(n * d));  // [N, D]
          const int64_t count = ll::cpu::classifier_forward_backward(
              losses.data(), dx.data(), nullptr, p.x.data(), p.lm_head.data(), p.target.data(), n,
              d, v, chunk, loss_scale);
          CHECK(count == count_fwd);
          // One implementation: the same chunks give the same bits.
          CHECK(std::memcmp(losses.data(), losses_fwd.data(), size_t(n) * sizeof(float)) == 0);
          // fp32 logits feed softmax - onehot; dx sums V terms of those times lm_head:
          // measured below 1.5e-7 of ||terms||, 1e-7 * |loss_scale| absolute per element.
          ll::test::check_close(dx, fd, 3e-7 * std::fabs(loss_scale), 3e-6, 5e-7 * cond);
          size_t nonzero_unlabelled = 0;
          for (int64_t i = 0; i < n; ++i)
            if (p.target[size_t(i)] < 0)
              for (int64_t k = 0; k < d; ++k) nonzero_unlabelled += dx[size_t(i * d + k)] != 0.0f;
          CHECK(nonzero_unlabelled == 0);
          // Chunking changes only the sgemm row counts: a few ulps.
          if (first_dx.empty()) first_dx = dx;
          size_t chunk_dependent = 0;
          for (size_t i = 0; i < dx.size(); ++i)
            chunk_dependent += !(std::fabs(dx[i] - first_dx[i]) <= 1e-6f * std::fabs(loss_scale));
          CHECK(chunk_dependent == 0);
        }
      }
    }
  }
}

TEST_CASE("classifier_forward_backward: lm_head gradient (full training) by finite differences") {
  for (uint64_t seed : ll::test::test_seeds()) {
    INFO("seed " << seed);
    std::mt19937_64 rng(seed);
    const Problem p = make_problem(rng, 13, 8, 37);
    const double loss_scale = 0.37;
    // d(loss_scale * sum of labelled row losses) / d lm_head[j, k], central differences in
    // double on the double reference loss.
    std::vector<double> fd(size_t(p.v * p.d), 0.0);
    for (int64_t j = 0; j < p.v; ++j) {
      for (int64_t k = 0; k < p.d; ++k) {
        // (L(w + h+) - L(w - h-)) / (h+ + h-) with the steps as fp32 actually rounded them.
        double loss[2] = {0.0, 0.0}, moved[2] = {0.0, 0.0};
        for (int side = 0; side < 2; ++side) {
          Problem q = p;
          float& w = q.lm_head[size_t(j * p.d + k)];
          w = float(double(w) + (side == 0 ? 1e-3 : -1e-3));
          moved[side] = double(w);
          for (int64_t i = 0; i < p.n; ++i) {
            if (p.target[size_t(i)] < 0) continue;
            std::vector<double> xi(p.x.begin() + i * p.d, p.x.begin() + (i + 1) * p.d);
            loss[side] += row_loss(q, xi.data(), p.target[size_t(i)]);
          }
        }
        fd[size_t(j * p.d + k)] = loss_scale * (loss[0] - loss[1]) / (moved[0] - moved[1]);
      }
    }
    std::vector<float> losses(size_t(p.n)), dx(size_t(p.n * p.d));
    // dlm_head accumulates: start from 1 and subtract it afterwards.
    std::vector<float> dlm_head(size_t(p.v * p.d), 1.0f);
    ll::cpu::classifier_forward_backward(losses.data(), dx.data(), dlm_head.data(), p.x.data(),
                                         p.lm_head.data(), p.target.data(), p.n, p.d, p.v, 4,
                                         float(loss_scale));
    for (float& g : dlm_head) g -= 1.0f;
    // The analytic form in double: sum over labelled rows of (softmax - onehot) x^T.
    std::vector<double> analytic(size_t(p.v * p.d), 0.0);
    for (int64_t i = 0; i < p.n; ++i) {
      const int32_t t = p.target[size_t(i)];
      if (t < 0) continue;
      std::vector<double> logit(size_t(p.v));
      double mx = -1e300, sum = 0.0;
      for (int64_t j = 0; j < p.v; ++j) {
        double s = 0.0;
        for (int64_t k = 0; k < p.d; ++k)
          s += double(p.x[size_t(i * p.d + k)]) * double(p.lm_head[size_t(j * p.d + k)]);
        logit[size_t(j)] = s;
        mx = std::max(mx, s);
      }
      for (double l : logit) sum += std::exp(l - mx);
      for (int64_t j = 0; j < p.v; ++j) {
        const double g =
            loss_scale * (std::exp(logit[size_t(j)] - mx) / sum - (j == t ? 1.0 : 0.0));
        for (int64_t k = 0; k < p.d; ++k)
          analytic[size_t(j * p.d + k)] += g * double(p.x[size_t(i * p.d + k)]);
      }
    }
    std::vector<float> fd_f(fd.begin(), fd.end());
    ll::test::check_close(fd_f, analytic, 1e-6, 1e-3, 1e-4);  // the two references agree
    ll::test::check_close(dlm_head, analytic, 2e-6, 2e-3, 1e-5);
  }
}

TEST_CASE("classifier_forward_backward with every position unlabelled gives dx = 0") {
  std::mt19937_64 rng(ll::test::test_seeds().back());
  Problem p = make_problem(rng, 6, 8, 11);
  for (auto& t : p.target) t = -100;
  auto losses = ll::test::poisoned(6);
  auto dx = ll::test::poisoned(6 * 8);
  CHECK(ll::cpu::classifier_forward_backward(losses.data(), dx.data(), nullptr, p.x.data(),
                                             p.lm_head.data(), p.target.data(), 6, 8, 11, 4,
                                             1.0f) == 0);
  for (float l : losses) CHECK(l == 0.0f);
  for (float g : dx) CHECK(g == 0.0f);
}

std::string error_of(const Problem& p, int64_t chunk_rows) {
  auto losses = ll::test::poisoned(size_t(p.n));
  auto dx = ll::test::poisoned(size_t(p.n * p.d));
  try {
    ll::cpu::classifier_forward_backward(losses.data(), dx.data(), nullptr, p.x.data(),
                                         p.lm_head.data(), p.target.data(), p.n, p.d, p.v,
                                         chunk_rows, 0.5f);
  } catch (const ll::Error& e) {
    return e.what();
  }
  return "";
}

TEST_CASE("classifier_forward_backward rejects what classifier_forward rejects") {
  std::mt19937_64 rng(ll::test::test_seeds().back());
  {
    Problem p = make_problem(rng, 10, 8, 50);
    p.target[7] = 50;
    const std::string message = error_of(p, 3);
    INFO("message: " << message);
    CHECK(ll::test::contains(message, "position 7"));
    CHECK(ll::test::contains(message, "50"));
  }
  {
    Problem p = make_problem(rng, 10, 8, 50);
    p.target[6] = 3;
    p.x[size_t(6 * p.d + 2)] = std::numeric_limits<float>::quiet_NaN();
    const std::string message = error_of(p, 4);
    INFO("message: " << message);
    CHECK(ll::test::contains(message, "position 6"));
  }
  CHECK_FALSE(error_of(make_problem(rng, 4, 8, 10), 0).empty());
}

}  // namespace
