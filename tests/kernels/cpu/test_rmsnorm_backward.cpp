// rmsnorm_backward against central finite differences of a double-precision RMSNorm: dx
// accumulates onto the residual gradient already there, dweight accumulates or is skipped.
#include <doctest/doctest.h>

#include <cstring>

#include "kernels/cpu/rmsnorm.h"
#include "tests/kernels/kernel_test_util.h"

namespace {

struct Problem {
  int64_t n, d;
  float eps;
  std::vector<float> x;       // [N, D]
  std::vector<float> weight;  // [D]
  std::vector<float> dout;    // [N, D]
};

// sum_d dout[row, d] * weight[d] * x[row, d] / sqrt(mean(x[row]^2) + eps), in double: the part
// of L = sum(dout * rmsnorm(x)) that row `row` contributes.
double row_loss(const Problem& p, const std::vector<double>& x, const std::vector<double>& w,
                int64_t row) {
  double ss = 0.0;
  for (int64_t d = 0; d < p.d; ++d) ss += x[size_t(row * p.d + d)] * x[size_t(row * p.d + d)];
  const double inv = 1.0 / std::sqrt(ss / double(p.d) + double(p.eps));
  double total = 0.0;
  for (int64_t d = 0; d < p.d; ++d)
    total += double(p.dout[size_t(row * p.d + d)]) * w[size_t(d)] * x[size_t(row * p.d + d)] * inv;
  return total;
}

// The double forward itself, [N, D], to confirm it is the function the kernel computes.
std::vector<double> forward(const Problem& p) {
  std::vector<double> out(p.x.size());
  for (int64_t r = 0; r < p.n; ++r) {
    double ss = 0.0;
    for (int64_t d = 0; d < p.d; ++d) {
      const double v = p.x[size_t(r * p.d + d)];
      ss += v * v;
    }
    const double inv = 1.0 / std::sqrt(ss / double(p.d) + double(p.eps));
    for (int64_t d = 0; d < p.d; ++d)
      out[size_t(r * p.d + d)] = double(p.weight[size_t(d)]) * p.x[size_t(r * p.d + d)] * inv;
  }
  return out;
}

// Central differences of L with respect to x [N, D] and weight [D]. Step 1e-6 in double:
// truncation ~h^2 * L''' and rounding ~1e-16 * |L| / h both stay below 1e-8.
void finite_difference(const Problem& p, std::vector<double>* dx, std::vector<double>* dw) {
  std::vector<double> x(p.x.begin(), p.x.end()), w(p.weight.begin(), p.weight.end());
  const double h = 1e-6;
  dx->assign(x.size(), 0.0);
  for (int64_t r = 0; r < p.n; ++r)
    for (int64_t d = 0; d < p.d; ++d) {
      double& v = x[size_t(r * p.d + d)];
      const double keep = v;
      v = keep + h;
      const double up = row_loss(p, x, w, r);
      v = keep - h;
      const double down = row_loss(p, x, w, r);
      v = keep;
      (*dx)[size_t(r * p.d + d)] = (up - down) / (2.0 * h);
    }
  dw->assign(w.size(), 0.0);
  for (int64_t d = 0; d < p.d; ++d) {
    const double keep = w[size_t(d)];
    double up = 0.0, down = 0.0;
    w[size_t(d)] = keep + h;
    for (int64_t r = 0; r < p.n; ++r) up += row_loss(p, x, w, r);
    w[size_t(d)] = keep - h;
    for (int64_t r = 0; r < p.n; ++r) down += row_loss(p, x, w, r);
    w[size_t(d)] = keep;
    (*dw)[size_t(d)] = (up - down) / (2.0 * h);
  }
}

double norm(const std::vector<double>& v) {
  double s = 0.0;
  for (double e : v) s += e * e;
  return std::sqrt(s);
}

// The sums of |terms| behind each gradient element (with the accumulated old contents), in
// double: rounding errors scale with these, so where the terms cancel (a two-row dweight
// sum, say) the error relative to the result grows by ||terms|| / ||result||.
void term_magnitudes(const Problem& p, const std::vector<float>& dx_old,
                     const std::vector<float>& dw_old, std::vector<double>* dx_terms,
                     std::vector<double>* dw_terms) {
  dx_terms->assign(p.x.size(), 0.0);
  dw_terms->assign(p.weight.size(), 0.0);
  for (int64_t r = 0; r < p.n; ++r) {
    double ss = 0.0, dot = 0.0;
    for (int64_t d = 0; d < p.d; ++d) {
      const size_t i = size_t(r * p.d + d);
      ss += double(p.x[i]) * p.x[i];
      dot += std::fabs(double(p.dout[i]) * p.weight[size_t(d)] * p.x[i]);
    }
    const double inv = 1.0 / std::sqrt(ss / double(p.d) + double(p.eps));
    for (int64_t d = 0; d < p.d; ++d) {
      const size_t i = size_t(r * p.d + d);
      (*dx_terms)[i] = std::fabs(dx_old[i]) +
                       inv * std::fabs(double(p.weight[size_t(d)]) * p.dout[i]) +
                       inv * inv * inv / double(p.d) * dot * std::fabs(p.x[i]);
      (*dw_terms)[size_t(d)] += std::fabs(double(p.dout[i]) * p.x[i] * inv);
    }
  }
  for (size_t d = 0; d < dw_terms->size(); ++d) (*dw_terms)[d] += std::fabs(dw_old[d]);
}

TEST_CASE("rmsnorm_backward equals central finite differences; dx and dweight accumulate") {
  struct Shape {
    int64_t n, d;
    float eps;
  };
  for (uint64_t seed : ll::test::test_seeds()) {
    INFO("seed " << seed);
    std::mt19937_64 rng(seed);
    // D = 1 with a small eps is y = w * sign(x): its gradient is ~eps / |x|^3, all
    // cancellation, so that shape gets a large eps.
    for (Shape s : {Shape{2, 1, 0.5f}, Shape{3, 8, 1e-5f}, Shape{5, 33, 1e-6f},
                    Shape{4, 130, 1e-5f}, Shape{6, 16, 0.5f}}) {
      CAPTURE(s.n);
      CAPTURE(s.d);
      CAPTURE(s.eps);
      Problem p{s.n,
                s.d,
                s.eps,
                ll::test::random_uniform(rng, size_t(s.n * s.d), -2.0f, 2.0f),
                ll::test::random_uniform(rng, size_t(s.d), -1.5f, 1.5f),
                ll::test::random_uniform(rng, size_t(s.n * s.d))};
      std::vector<float> out(p.x.size()), rstd = ll::test::poisoned(size_t(s.n));
      ll::cpu::rmsnorm_forward(out.data(), rstd.data(), p.x.data(), p.weight.data(), s.n, s.d,
                               s.eps);
      {
        INFO("the kernel's forward is the double forward differentiated below");
        ll::test::check_close(out, forward(p), 1e-6, 1e-5);
      }
      std::vector<double> dx_fd, dw_fd;
      finite_difference(p, &dx_fd, &dw_fd);

      for (bool with_dweight : {false, true}) {
        for (bool from_zero : {true, false}) {
          CAPTURE(with_dweight);
          CAPTURE(from_zero);
          // From zero the kernel's own gradient is measured; from random contents (the
          // residual gradient, earlier micro-batches) it must be added to, not overwritten.
          const auto dx_old = from_zero ? std::vector<float>(size_t(s.n * s.d), 0.0f)
                                        : ll::test::random_uniform(rng, size_t(s.n * s.d));
          const auto dw_old = from_zero ? std::vector<float>(size_t(s.d), 0.0f)
                                        : ll::test::random_uniform(rng, size_t(s.d));
          auto dx = dx_old;  // [N, D]
          auto dw = dw_old;  // [D]
          ll::cpu::rmsnorm_backward(dx.data(), with_dweight ? dw.data() : nullptr, p.dout.data(),
                                    p.x.data(), p.weight.data(), rstd.data(), s.n, s.d);
          std::vector<double> dx_ref(dx.size()), dw_ref(dw.size());
          for (size_t i = 0; i < dx.size(); ++i) dx_ref[i] = double(dx_old[i]) + dx_fd[i];
          for (size_t i = 0; i < dw.size(); ++i) dw_ref[i] = double(dw_old[i]) + dw_fd[i];
          // The kernel combines fp32-rounded inputs (rstd, x) in double: a few ulps of each
          // term, measured below 1.2e-7 of ||terms||.
          std::vector<double> dx_terms, dw_terms;
          term_magnitudes(p, dx_old, dw_old, &dx_terms, &dw_terms);
          {
            INFO("dx");
            const double cond = std::max(1.0, norm(dx_terms) / norm(dx_ref));
            ll::test::check_close(dx, dx_ref, 5e-7, 5e-6, 5e-7 * cond);
          }
          if (with_dweight) {
            INFO("dweight");
            const double cond = std::max(1.0, norm(dw_terms) / norm(dw_ref));
            ll::test::check_close(dw, dw_ref, 5e-7, 5e-6, 5e-7 * cond);
          } else {
            CHECK(std::memcmp(dw.data(), dw_old.data(), dw.size() * sizeof(float)) == 0);
          }
        }
      }
    }
  }
}

TEST_CASE("rmsnorm_backward with zero rows leaves its outputs unchanged") {
  std::vector<float> dw = {1.0f, 2.0f, 3.0f};
  const std::vector<float> w = {1.0f, 1.0f, 1.0f};
  ll::cpu::rmsnorm_backward(nullptr, dw.data(), nullptr, nullptr, w.data(), nullptr, 0, 3);
  CHECK(dw == std::vector<float>{1.0f, 2.0f, 3.0f});
}

}  // namespace
