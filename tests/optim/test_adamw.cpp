// AdamW against an independent float64 implementation (several steps, weight decay on/off,
// gradient scaling, beta2 0.95 and 0.999) and against torch.optim.AdamW (a committed fixture
// from tests/reference/make_optim_fixture.py).
#include <doctest/doctest.h>
#include <omp.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "common/error.h"
#include "model/formats/safetensors.h"
#include "optim/adamw.h"
#include "tests/test_paths.h"

namespace {

// ||out - ref|| / ||ref|| and whether every element satisfies |out - ref| <= atol + rtol |ref|
// (NaN never passes).
struct Comparison {
  double rel = 0.0;
  double max_abs = 0.0;
  bool elementwise_ok = true;
};

Comparison compare(const std::vector<float>& out, const std::vector<double>& ref, double rtol,
                   double atol) {
  REQUIRE(out.size() == ref.size());
  double diff2 = 0.0, ref2 = 0.0;
  Comparison c;
  for (size_t i = 0; i < out.size(); ++i) {
    const double d = std::abs(double(out[i]) - ref[i]);
    diff2 += d * d;
    ref2 += ref[i] * ref[i];
    c.max_abs = std::max(c.max_abs, d);
    if (!(d <= atol + rtol * std::abs(ref[i]))) c.elementwise_ok = false;
  }
  c.rel = std::sqrt(diff2 / ref2);
  if (std::isnan(c.rel)) c.elementwise_ok = false;
  return c;
}

double rms(const std::vector<double>& v) {
  double s = 0.0;
  for (double x : v) s += x * x;
  return std::sqrt(s / double(v.size()));
}

std::vector<double> to_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }

// AdamW from its formula in float64: decoupled weight decay, bias-corrected moments, eps added
// to the corrected square root of the second moment.
struct ReferenceAdamW {
  std::vector<double> p, m, v;
  explicit ReferenceAdamW(const std::vector<float>& init)
      : p(init.begin(), init.end()), m(init.size(), 0.0), v(init.size(), 0.0) {}

  void step(const std::vector<double>& grad, double lr, int t, double b1, double b2, double eps,
            double wd) {
    for (size_t i = 0; i < p.size(); ++i) {
      const double g = grad[i];
      p[i] -= lr * wd * p[i];
      m[i] = b1 * m[i] + (1 - b1) * g;
      v[i] = b2 * v[i] + (1 - b2) * g * g;
      const double m_hat = m[i] / (1 - std::pow(b1, t));
      const double v_hat = v[i] / (1 - std::pow(b2, t));
      p[i] -= lr * m_hat / (std::sqrt(v_hat) + eps);
    }
  }
};

std::vector<float> randn(size_t n, std::mt19937_64& rng, float scale = 1.0f) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

}  // namespace

TEST_CASE("adamw matches a float64 AdamW over several steps") {
  struct Case {
    double beta2;
    double weight_decay;
    float grad_scale;
    double lr;
    float grad_magnitude;
  };
  const Case cases[] = {
      {0.95, 0.0, 1.0f, 1e-3, 1.0f},   {0.95, 0.1, 1.0f, 1e-3, 1.0f},
      {0.999, 0.0, 1.0f, 2e-5, 1.0f},  {0.999, 0.01, 0.37f, 1e-3, 1.0f},
      {0.95, 0.1, 0.25f, 3e-4, 3.0f},  {0.95, 0.0, 1.0f, 1e-3, 1e-6f},  // eps matters
      {0.999, 0.1, 0.5f, 1e-2, 1e-3f},
  };
  // Several seeds and a size that is not a multiple of any vector width; one case large enough
  // for the OpenMP path.
  const size_t sizes[] = {1, 37, 1003, 100003};
  uint64_t seed = 1;
  for (const Case& c : cases) {
    for (size_t n : sizes) {
      CAPTURE(c.beta2);
      CAPTURE(c.weight_decay);
      CAPTURE(c.grad_scale);
      CAPTURE(c.grad_magnitude);
      CAPTURE(n);
      std::mt19937_64 rng(seed++);
      std::vector<float> p = randn(n, rng), m(n, 0.0f), v(n, 0.0f);
      ReferenceAdamW ref(p);
      ll::AdamWStep step;
      step.config.beta1 = 0.9;
      step.config.beta2 = c.beta2;
      step.config.eps = 1e-8;
      step.config.weight_decay = c.weight_decay;
      step.lr = c.lr;
      step.grad_scale = c.grad_scale;
      for (int t = 1; t <= 8; ++t) {
        const std::vector<float> g = randn(n, rng, c.grad_magnitude);
        // The reference scales the gradient in fp32 too: grad_scale * grad is the input the
        // update is defined on (torch multiplies the fp32 gradient by the clip coefficient).
        std::vector<double> g_scaled(n);
        for (size_t i = 0; i < n; ++i) g_scaled[i] = double(c.grad_scale * g[i]);
        step.step = t;
        ll::adamw_update(p.data(), g.data(), m.data(), v.data(), int64_t(n), step);
        ref.step(g_scaled, c.lr, t, 0.9, c.beta2, 1e-8, c.weight_decay);
      }
      // Per element: rtol 1e-6 plus an absolute term at the scale of what is compared (the
      // parameters move by at most ~lr per step; m near 0 is a cancellation, so its error is
      // measured against the typical |m|).
      const Comparison cp = compare(p, ref.p, 1e-6, 1e-6 * c.lr * 8);
      const Comparison cm = compare(m, ref.m, 1e-6, 1e-6 * rms(ref.m));
      const Comparison cv = compare(v, ref.v, 1e-6, 1e-6 * rms(ref.v));
      CHECK(cp.rel <= 1e-6);
      CHECK(cp.elementwise_ok);
      CHECK(cm.rel <= 1e-6);
      CHECK(cm.elementwise_ok);
      CHECK(cv.rel <= 1e-6);
      CHECK(cv.elementwise_ok);
    }
  }
}

TEST_CASE("adamw: one update from a random state, measured on the update itself") {
  // With p = 0 the result is the Adam term alone, so its error is not hidden behind the
  // rounding of a parameter of size 1 (an update is ~lr, a million times smaller).
  uint64_t seed = 100;
  for (double beta2 : {0.95, 0.999}) {
    for (int64_t t : {int64_t(1), int64_t(2), int64_t(10), int64_t(1000)}) {
      for (float grad_scale : {1.0f, 0.37f}) {
        CAPTURE(beta2);
        CAPTURE(t);
        CAPTURE(grad_scale);
        const size_t n = 4099;
        std::mt19937_64 rng(seed++);
        std::vector<float> p(n, 0.0f), m = randn(n, rng, 0.1f), v = randn(n, rng, 0.1f);
        for (float& x : v) x = x * x;
        const std::vector<float> g = randn(n, rng);
        std::vector<double> want_p(n), want_m(n), want_v(n);
        for (size_t i = 0; i < n; ++i) {
          const double gi = double(grad_scale * g[i]);
          want_m[i] = 0.9 * m[i] + 0.1 * gi;
          want_v[i] = beta2 * v[i] + (1 - beta2) * gi * gi;
          const double m_hat = want_m[i] / (1 - std::pow(0.9, double(t)));
          const double v_hat = want_v[i] / (1 - std::pow(beta2, double(t)));
          want_p[i] = -1e-3 * m_hat / (std::sqrt(v_hat) + 1e-8);
        }
        ll::AdamWStep step;
        step.config.beta2 = beta2;
        step.config.weight_decay = 0.1;  // 0 * (1 - lr wd) = 0: only the Adam term remains
        step.lr = 1e-3;
        step.step = t;
        step.grad_scale = grad_scale;
        ll::adamw_update(p.data(), g.data(), m.data(), v.data(), int64_t(n), step);
        const Comparison cp = compare(p, want_p, 1e-6, 1e-6 * rms(want_p));
        const Comparison cm = compare(m, want_m, 1e-6, 1e-6 * rms(want_m));
        const Comparison cv = compare(v, want_v, 1e-6, 1e-6 * rms(want_v));
        CHECK(cp.rel <= 1e-6);
        CHECK(cp.elementwise_ok);
        CHECK(cm.rel <= 1e-6);
        CHECK(cm.elementwise_ok);
        CHECK(cv.rel <= 1e-6);
        CHECK(cv.elementwise_ok);
      }
    }
  }
}

TEST_CASE("adamw matches torch.optim.AdamW (fixture)") {
  const std::string path = ll::test::source_path("tests/fixtures/adamw_reference.safetensors");
  const ll::SafetensorsFile f = ll::read_safetensors(path);
  // The hyperparameters the fixture was made with (its one metadata key).
  REQUIRE(f.metadata.count("adamw") == 1);
  const std::string& meta = f.metadata.at("adamw");
  CHECK(meta.find("lr=0.001 beta1=0.9 beta2=0.95 eps=1e-08 steps=5") != std::string::npos);
  CHECK(meta.find("wd0=0 wd01=0.1 scaled=0.1 grad_scale=0.37") != std::string::npos);

  const std::vector<float> init = f.read_f32("param_init");
  const int64_t n = int64_t(init.size());
  const int steps = 5;
  const std::vector<float> grads = f.read_f32("grads", {steps, n});
  const float grad_scale = f.read_f32("grad_scale", {1})[0];
  CHECK(grad_scale == 0.37f);

  struct Run {
    const char* name;
    double weight_decay;
    float grad_scale;
  };
  const Run runs[] = {{"wd0", 0.0, 1.0f}, {"wd01", 0.1, 1.0f}, {"scaled", 0.1, grad_scale}};
  for (const Run& run : runs) {
    const std::string name = run.name;
    CAPTURE(name);
    const std::vector<float> want_params = f.read_f32(name + "_params", {steps, n});
    std::vector<float> p = init, m(size_t(n), 0.0f), v(size_t(n), 0.0f);
    ll::AdamWStep step;
    step.config.beta1 = 0.9;
    step.config.beta2 = 0.95;
    step.config.eps = 1e-8;
    step.config.weight_decay = run.weight_decay;
    step.lr = 1e-3;
    step.grad_scale = run.grad_scale;
    double worst = 0.0;
    int64_t bit_different = 0;
    for (int t = 1; t <= steps; ++t) {
      CAPTURE(t);
      step.step = t;
      ll::adamw_update(p.data(), grads.data() + (t - 1) * n, m.data(), v.data(), n, step);
      const std::vector<float> want(want_params.begin() + (t - 1) * n, want_params.begin() + t * n);
      const Comparison c = compare(p, to_double(want), 1e-6, 1e-9);
      CHECK(c.rel <= 1e-6);
      CHECK(c.elementwise_ok);
      worst = std::max(worst, c.rel);
      for (int64_t i = 0; i < n; ++i) bit_different += p[size_t(i)] != want[size_t(i)];
    }
    const Comparison cm = compare(m, to_double(f.read_f32(name + "_exp_avg", {n})), 1e-6, 1e-12);
    const Comparison cv = compare(v, to_double(f.read_f32(name + "_exp_avg_sq", {n})), 1e-6, 1e-15);
    CHECK(cm.rel <= 1e-6);
    CHECK(cm.elementwise_ok);
    CHECK(cv.rel <= 1e-6);
    CHECK(cv.elementwise_ok);
    MESSAGE(name << ": params worst rel error vs torch " << worst << " (" << bit_different << " of "
                 << steps * n << " values not bit-identical), exp_avg " << cm.rel << ", exp_avg_sq "
                 << cv.rel);
  }
}

TEST_CASE("adamw: weight decay is decoupled and scaled by lr") {
  // Zero gradient: moments stay 0, the Adam term is 0 / (0 + eps) = 0, only decay acts.
  std::vector<float> p{1.0f, -2.0f, 0.5f}, g(3, 0.0f), m(3, 0.0f), v(3, 0.0f);
  ll::AdamWStep step;
  step.config.weight_decay = 0.1;
  step.lr = 1e-2;
  step.step = 1;
  ll::adamw_update(p.data(), g.data(), m.data(), v.data(), 3, step);
  const float decay = float(1.0 - 1e-2 * 0.1);
  CHECK(p[0] == 1.0f * decay);
  CHECK(p[1] == -2.0f * decay);
  CHECK(p[2] == 0.5f * decay);
  CHECK(m[0] == 0.0f);
  CHECK(v[0] == 0.0f);
}

TEST_CASE("adamw: first step moves each parameter by about lr against the gradient sign") {
  // Step 1: m_hat = g, v_hat = g^2, so the update is lr * g / (|g| + eps) ~ lr * sign(g).
  std::vector<float> p{0.0f, 0.0f, 1.0f}, g{3.0f, -0.002f, 1e3f}, m(3, 0.0f), v(3, 0.0f);
  ll::AdamWStep step;
  step.lr = 1e-3;
  step.step = 1;
  ll::adamw_update(p.data(), g.data(), m.data(), v.data(), 3, step);
  CHECK(p[0] == doctest::Approx(-1e-3).epsilon(1e-5));
  CHECK(p[1] == doctest::Approx(1e-3).epsilon(1e-5));
  CHECK(p[2] == doctest::Approx(1.0 - 1e-3).epsilon(1e-6));
}

TEST_CASE("adamw: grad_scale is applied to the gradient before both moments") {
  const size_t n = 257;
  std::mt19937_64 rng(99);
  const std::vector<float> p0 = randn(n, rng), g = randn(n, rng);
  // scale 0.5 on g equals passing 0.5 * g (exactly, a power of two) with scale 1.
  std::vector<float> half_g(n);
  for (size_t i = 0; i < n; ++i) half_g[i] = 0.5f * g[i];
  std::vector<float> pa = p0, ma(n, 0.1f), va(n, 0.2f), pb = p0, mb(n, 0.1f), vb(n, 0.2f);
  ll::AdamWStep a;
  a.lr = 1e-3;
  a.step = 3;
  a.config.weight_decay = 0.05;
  ll::AdamWStep b = a;
  a.grad_scale = 0.5f;
  ll::adamw_update(pa.data(), g.data(), ma.data(), va.data(), int64_t(n), a);
  ll::adamw_update(pb.data(), half_g.data(), mb.data(), vb.data(), int64_t(n), b);
  CHECK(std::memcmp(pa.data(), pb.data(), n * 4) == 0);
  CHECK(std::memcmp(ma.data(), mb.data(), n * 4) == 0);
  CHECK(std::memcmp(va.data(), vb.data(), n * 4) == 0);
}

TEST_CASE("adamw: deterministic and independent of the thread count") {
  const size_t n = 300001;  // above the OpenMP threshold
  std::mt19937_64 rng(7);
  const std::vector<float> p0 = randn(n, rng), g = randn(n, rng);
  auto run = [&](int threads) {
    const int saved = omp_get_max_threads();
    omp_set_num_threads(threads);
    std::vector<float> p = p0, m(n, 0.0f), v(n, 0.0f);
    ll::AdamWStep step;
    step.lr = 2e-5;
    step.config.weight_decay = 0.1;
    for (int t = 1; t <= 3; ++t) {
      step.step = t;
      ll::adamw_update(p.data(), g.data(), m.data(), v.data(), int64_t(n), step);
    }
    omp_set_num_threads(saved);
    return p;
  };
  const std::vector<float> one = run(1), many = run(4), again = run(4);
  CHECK(std::memcmp(one.data(), many.data(), n * 4) == 0);
  CHECK(std::memcmp(many.data(), again.data(), n * 4) == 0);
}

TEST_CASE("adamw: empty tensors and invalid step numbers") {
  ll::AdamWStep step;
  step.lr = 1e-3;
  step.step = 1;
  ll::adamw_update(nullptr, nullptr, nullptr, nullptr, 0, step);  // nothing to do
  float p = 1.0f, g = 1.0f, m = 0.0f, v = 0.0f;
  step.step = 0;
  CHECK_THROWS_AS(ll::adamw_update(&p, &g, &m, &v, 1, step), ll::Error);
  CHECK(p == 1.0f);
}
