// RoPE (rotate-half) against double references, and against values Hugging Face
// transformers computed in fp32 (golden numbers below).
#include <doctest/doctest.h>

#include "common/error.h"
#include "kernels/cpu/rope.h"
#include "tests/kernels/kernel_test_util.h"
#include "tests/kernels/rope_scalings.h"

namespace {

struct Case {
  int64_t n, heads, hd, offset;
  double scale, theta;
};

// HF's fp32 angle (the definition we match): inv_freq = 1 / theta^(2j/hd) in fp32, divided by
// the linear factor in fp32, times the fp32 position.
double hf_angle(const Case& c, int64_t pos, int64_t j) {
  const float exponent = float(2 * j) / float(c.hd);
  const float inv_freq = (1.0f / std::pow(float(c.theta), exponent)) / float(c.scale);
  return double(float(pos) * inv_freq);
}

// The exact angle, pos / scale * theta^(-2j/hd), in double.
double exact_angle(const Case& c, int64_t pos, int64_t j) {
  return double(pos) / c.scale * std::pow(c.theta, -2.0 * double(j) / double(c.hd));
}

// out[j] = x1 cos - x2 sin, out[j + hd/2] = x2 cos + x1 sin, in double.
template <typename AngleFn>
std::vector<double> reference(const std::vector<float>& x, const Case& c, AngleFn angle) {
  std::vector<double> ref(x.size());  // [N, heads, hd]
  const int64_t half = c.hd / 2;
  for (int64_t n = 0; n < c.n; ++n) {
    for (int64_t h = 0; h < c.heads; ++h) {
      const size_t base = size_t((n * c.heads + h) * c.hd);
      for (int64_t j = 0; j < half; ++j) {
        const double a = angle(c, c.offset + n, j);
        const double x1 = x[base + size_t(j)], x2 = x[base + size_t(j + half)];
        ref[base + size_t(j)] = x1 * std::cos(a) - x2 * std::sin(a);
        ref[base + size_t(j + half)] = x2 * std::cos(a) + x1 * std::sin(a);
      }
    }
  }
  return ref;
}

TEST_CASE("rope_forward rotates pairs (j, j + hd/2) by HF's fp32 angles") {
  const Case cases[] = {{1, 1, 2, 0, 1.0, 10000.0},         {7, 3, 16, 0, 1.0, 10000.0},
                        {33, 4, 64, 5, 1.0, 10000.0},       {20, 2, 128, 4000, 25.0, 10000.0},
                        {9, 2, 128, 100000, 3.0, 500000.0}, {5, 1, 64, 17, 2.0, 10000.0}};
  for (uint64_t seed : ll::test::test_seeds()) {
    INFO("seed " << seed);
    std::mt19937_64 rng(seed);
    for (const Case& c : cases) {
      CAPTURE(c.n);
      CAPTURE(c.heads);
      CAPTURE(c.hd);
      CAPTURE(c.offset);
      CAPTURE(c.scale);
      const auto x = ll::test::random_uniform(rng, size_t(c.n * c.heads * c.hd));
      auto out = x;  // in place, [N, heads, hd]
      ll::cpu::rope_forward(out.data(), c.n, c.heads, c.hd, c.offset,
                            ll::test::linear_freqs(c.hd, c.scale, c.theta));
      ll::test::check_close(out, reference(x, c, hf_angle), 1e-6, 1e-6);

      // Against exact angles: the only extra error is the fp32 angle's rounding, a few ulps of
      // |angle| (pow, reciprocal, division, product, and the position itself above 2^24).
      const auto exact = reference(x, c, exact_angle);
      const int64_t half = c.hd / 2;
      size_t bad = 0;
      for (int64_t n = 0; n < c.n; ++n)
        for (int64_t h = 0; h < c.heads; ++h)
          for (int64_t j = 0; j < c.hd; ++j) {
            const size_t i = size_t((n * c.heads + h) * c.hd + j);
            const double a = std::fabs(exact_angle(c, c.offset + n, j % half));
            const double bound = 1e-6 + 1.5 * 6.0 * a * std::ldexp(1.0, -24);
            if (!(std::fabs(double(out[i]) - exact[i]) <= bound)) ++bad;
          }
      CHECK(bad == 0);
    }
  }
}

TEST_CASE("rope_forward reproduces transformers' LlamaRotaryEmbedding values") {
  // transformers 5.24 / torch 2.15, CPU fp32: LlamaRotaryEmbedding (rope_scaling
  // {type: linear, factor: 25} or none) and apply_rotary_pos_emb on x = ones, head_dim 128,
  // theta 10000, at positions 1, 4095 and 99999; {position, j, out[j], out[j + 64]}.
  // At position 99999 / 25 the angle of pair 0 is ~4000 rad, where one fp32 ulp moves the
  // output by ~2e-4: these only match if the angle is rounded exactly as HF rounds it.
  struct Golden {
    int64_t pos, j;
    float lo, hi;
  };
  const std::vector<Golden> linear25 = {
      {1, 0, 0.959210753f, 1.03918946f},        {1, 1, 0.964768469f, 1.03403175f},
      {1, 17, 0.996530116f, 1.00345778f},       {1, 63, 0.99999541f, 1.00000465f},
      {4095, 0, 0.482556134f, 1.32933807f},     {4095, 1, -0.434261709f, -1.34588885f},
      {4095, 17, -1.04619062f, 0.951569855f},   {4095, 63, 0.980906904f, 1.01873529f},
      {99999, 0, -0.102984071f, -1.41045892f},  {99999, 1, -1.19155109f, 0.761712551f},
      {99999, 17, -0.0306048393f, 1.41388237f}, {99999, 63, 0.449546695f, 1.34086084f}};
  const std::vector<Golden> unscaled = {
      {1, 0, -0.301168621f, 1.38177323f},      {1, 1, -0.113814592f, 1.40962625f},
      {1, 17, 0.909764647f, 1.08274114f},      {1, 63, 0.999884546f, 1.00011551f},
      {4095, 0, 0.931845188f, -1.06379724f},   {4095, 1, -1.41235185f, -0.0725395083f},
      {4095, 17, -1.30378866f, -0.54784596f},  {4095, 63, 0.434803873f, 1.34571385f},
      {99999, 0, -1.37012362f, 0.35037291f},   {99999, 1, 0.105951428f, 1.4102391f},
      {99999, 17, -0.729388356f, 1.21160746f}, {99999, 63, 1.375911f, -0.326908112f}};
  for (const auto& [scale, goldens] : {std::pair{25.0, linear25}, std::pair{1.0, unscaled}}) {
    CAPTURE(scale);
    for (const Golden& g : goldens) {
      CAPTURE(g.pos);
      CAPTURE(g.j);
      std::vector<float> x(128, 1.0f);  // [1 token, 1 head, 128]
      ll::cpu::rope_forward(x.data(), 1, 1, 128, g.pos,
                            ll::test::linear_freqs(128, scale, 10000.0));
      // torch's fp32 cos/sin are within an ulp of ours; the angle must be the same.
      CHECK(std::fabs(x[size_t(g.j)] - g.lo) <= 1e-6);
      CHECK(std::fabs(x[size_t(g.j + 64)] - g.hi) <= 1e-6);
    }
  }
}

TEST_CASE("rope_forward rejects an odd head_dim, frequencies of another size, a bad scaling") {
  std::vector<float> x(6, 1.0f);
  const ll::RopeFrequencies one{{1.0f}, 1.0f};  // [1]: head_dim 2
  CHECK_THROWS_AS(ll::cpu::rope_forward(x.data(), 1, 2, 3, 0, one), ll::Error);
  CHECK_THROWS_AS(ll::cpu::rope_forward(x.data(), 1, 1, 6, 0, one), ll::Error);
  CHECK_NOTHROW(ll::cpu::rope_forward(x.data(), 1, 3, 2, 0, one));
  const ll::RopeFrequencies zero{{1.0f}, 0.0f};
  CHECK_THROWS_AS(ll::cpu::rope_forward(x.data(), 1, 3, 2, 0, zero), ll::Error);
  CHECK_THROWS_AS(ll::test::linear_freqs(2, 0.0, 10000.0), ll::Error);
}

}  // namespace
