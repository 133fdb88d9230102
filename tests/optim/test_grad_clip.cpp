// clip_coefficient: torch.nn.utils.clip_grad_norm_'s factor min(1, max_norm / (norm + 1e-6)).
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "optim/grad_clip.h"

TEST_CASE("below the limit the gradients are left alone") {
  CHECK(ll::clip_coefficient(0.0, 1.0) == 1.0);
  CHECK(ll::clip_coefficient(0.5, 1.0) == 1.0);
  // At exactly max_norm the 1e-6 makes the factor just under 1, as in torch.
  CHECK(ll::clip_coefficient(1.0, 1.0) == doctest::Approx(1.0 / (1.0 + 1e-6)));
  CHECK(ll::clip_coefficient(1.0, 1.0) < 1.0);
  CHECK(ll::clip_coefficient(1.0 - 2e-6, 1.0) == 1.0);
}

TEST_CASE("above the limit the factor brings the norm to max_norm") {
  CHECK(ll::clip_coefficient(4.0, 1.0) == 1.0 / (4.0 + 1e-6));
  CHECK(ll::clip_coefficient(10.0, 2.5) == 2.5 / (10.0 + 1e-6));
  CHECK(ll::clip_coefficient(1e6, 1.0) * 1e6 == doctest::Approx(1.0).epsilon(1e-9));
}

TEST_CASE("max_norm <= 0 disables clipping") {
  CHECK(ll::clip_coefficient(123.0, 0.0) == 1.0);
  CHECK(ll::clip_coefficient(123.0, -1.0) == 1.0);
  CHECK(ll::clip_coefficient(std::numeric_limits<double>::quiet_NaN(), 0.0) == 1.0);
}

TEST_CASE("non-finite norms are not hidden") {
  // torch: clamp(max_norm / (inf + 1e-6), max=1) = 0 and a NaN norm gives a NaN factor.
  CHECK(ll::clip_coefficient(std::numeric_limits<double>::infinity(), 1.0) == 0.0);
  CHECK(std::isnan(ll::clip_coefficient(std::numeric_limits<double>::quiet_NaN(), 1.0)));
}

TEST_CASE("matches torch's formula applied to a gradient set") {
  // Clipping random gradients: the clipped global norm is max_norm (up to the 1e-6), and the
  // factor is torch's clamp(max_norm / (total_norm + 1e-6), max=1).
  std::mt19937_64 rng(2024);
  std::normal_distribution<double> dist(0.0, 1.0);
  for (int trial = 0; trial < 20; ++trial) {
    std::vector<std::vector<double>> grads(3);
    double sumsq = 0.0;
    for (size_t k = 0; k < grads.size(); ++k) {
      grads[k].resize(10 + 7 * k);
      for (double& g : grads[k]) {
        g = dist(rng) * (trial % 2 ? 0.01 : 1.0);
        sumsq += g * g;
      }
    }
    const double total_norm = std::sqrt(sumsq);
    const double max_norm = 1.0;
    const double coef = ll::clip_coefficient(total_norm, max_norm);
    const double torch_coef = std::min(max_norm / (total_norm + 1e-6), 1.0);
    CHECK(coef == torch_coef);
    double clipped = 0.0;
    for (const auto& grad : grads)
      for (double g : grad) clipped += (g * coef) * (g * coef);
    if (total_norm > max_norm) {
      CHECK(std::sqrt(clipped) == doctest::Approx(max_norm).epsilon(1e-5));
    } else {
      CHECK(std::sqrt(clipped) == doctest::Approx(total_norm).epsilon(1e-12));
    }
  }
}
