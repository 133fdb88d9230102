// rope_backward: forward then backward (and backward then forward) is the identity, since
// the rotation is orthogonal, and the gradient equals central finite differences of a
// double-precision RoPE at HF's fp32 angles, with position interpolation and offsets.
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

const Case kCases[] = {{1, 1, 2, 0, 1.0, 10000.0},
                       {5, 2, 16, 3, 1.0, 10000.0},
                       {7, 3, 8, 4000, 25.0, 10000.0},
                       {4, 2, 64, 100000, 3.0, 500000.0},
                       {3, 1, 128, 99990, 25.0, 10000.0}};

// HF's fp32 angle (what rope_forward matches, see test_rope.cpp): inv_freq = 1 / theta^(2j/hd)
// in fp32, divided by the linear factor in fp32, times the fp32 position.
double hf_angle(const Case& c, int64_t pos, int64_t j) {
  const float exponent = float(2 * j) / float(c.hd);
  const float inv_freq = (1.0f / std::pow(float(c.theta), exponent)) / float(c.scale);
  return double(float(pos) * inv_freq);
}

// L = sum(dout * rope(x)) with cos/sin in double: per pair, x1 cos - x2 sin and x2 cos + x1 sin.
double loss(const Case& c, const std::vector<double>& x, const std::vector<float>& dout,
            const std::vector<double>& cs, const std::vector<double>& sn) {
  const int64_t half = c.hd / 2;
  double total = 0.0;
  for (int64_t n = 0; n < c.n; ++n)
    for (int64_t h = 0; h < c.heads; ++h) {
      const size_t base = size_t((n * c.heads + h) * c.hd);
      for (int64_t j = 0; j < half; ++j) {
        const double cj = cs[size_t(n * half + j)], sj = sn[size_t(n * half + j)];
        const double x1 = x[base + size_t(j)], x2 = x[base + size_t(j + half)];
        total += double(dout[base + size_t(j)]) * (x1 * cj - x2 * sj) +
                 double(dout[base + size_t(j + half)]) * (x2 * cj + x1 * sj);
      }
    }
  return total;
}

TEST_CASE("rope_backward after rope_forward (and before it) is the identity") {
  for (uint64_t seed : ll::test::test_seeds()) {
    INFO("seed " << seed);
    std::mt19937_64 rng(seed);
    for (const Case& c : kCases) {
      CAPTURE(c.n);
      CAPTURE(c.hd);
      CAPTURE(c.offset);
      CAPTURE(c.scale);
      const auto x = ll::test::random_uniform(rng, size_t(c.n * c.heads * c.hd));
      const std::vector<double> ref(x.begin(), x.end());
      // fp32 cos^2 + sin^2 = 1 within a few ulps, plus the roundings of two rotations.
      auto y = x;  // [N, heads, hd]
      ll::cpu::rope_forward(y.data(), c.n, c.heads, c.hd, c.offset,
                            ll::test::linear_freqs(c.hd, c.scale, c.theta));
      ll::cpu::rope_backward(y.data(), c.n, c.heads, c.hd, c.offset,
                             ll::test::linear_freqs(c.hd, c.scale, c.theta));
      ll::test::check_close(y, ref, 5e-7, 5e-7, 3e-7);
      auto z = x;  // [N, heads, hd]
      ll::cpu::rope_backward(z.data(), c.n, c.heads, c.hd, c.offset,
                             ll::test::linear_freqs(c.hd, c.scale, c.theta));
      ll::cpu::rope_forward(z.data(), c.n, c.heads, c.hd, c.offset,
                            ll::test::linear_freqs(c.hd, c.scale, c.theta));
      ll::test::check_close(z, ref, 5e-7, 5e-7, 3e-7);
    }
  }
}

TEST_CASE("rope_backward equals central finite differences of sum(dout * rope(x))") {
  for (uint64_t seed : ll::test::test_seeds()) {
    INFO("seed " << seed);
    std::mt19937_64 rng(seed);
    for (const Case& c : kCases) {
      CAPTURE(c.n);
      CAPTURE(c.hd);
      CAPTURE(c.offset);
      CAPTURE(c.scale);
      const int64_t half = c.hd / 2;
      std::vector<double> cs(size_t(c.n * half)), sn(size_t(c.n * half));  // [N, hd/2]
      for (int64_t n = 0; n < c.n; ++n)
        for (int64_t j = 0; j < half; ++j) {
          const double a = hf_angle(c, c.offset + n, j);
          cs[size_t(n * half + j)] = std::cos(a);
          sn[size_t(n * half + j)] = std::sin(a);
        }
      const size_t count = size_t(c.n * c.heads * c.hd);
      const auto x = ll::test::random_uniform(rng, count);     // [N, heads, hd]
      const auto dout = ll::test::random_uniform(rng, count);  // [N, heads, hd]
      std::vector<double> xd(x.begin(), x.end());
      // L is linear in x, so the central difference is exact up to rounding.
      const double h = 1e-3;
      std::vector<double> fd(count);
      for (size_t i = 0; i < count; ++i) {
        const double keep = xd[i];
        xd[i] = keep + h;
        const double up = loss(c, xd, dout, cs, sn);
        xd[i] = keep - h;
        const double down = loss(c, xd, dout, cs, sn);
        xd[i] = keep;
        fd[i] = (up - down) / (2.0 * h);
      }
      // The double forward is the kernel's forward (to fp32 cos/sin rounding).
      auto y = x;
      ll::cpu::rope_forward(y.data(), c.n, c.heads, c.hd, c.offset,
                            ll::test::linear_freqs(c.hd, c.scale, c.theta));
      double kernel_loss = 0.0;
      for (size_t i = 0; i < count; ++i) kernel_loss += double(dout[i]) * double(y[i]);
      CHECK(std::fabs(loss(c, xd, dout, cs, sn) - kernel_loss) <= 1e-6 * double(count));

      auto dx = dout;  // in place
      ll::cpu::rope_backward(dx.data(), c.n, c.heads, c.hd, c.offset,
                             ll::test::linear_freqs(c.hd, c.scale, c.theta));
      ll::test::check_close(dx, fd, 5e-7, 5e-7, 3e-7);
    }
  }
}

TEST_CASE("rope_backward at an offset equals the same tokens inside a longer sequence") {
  // Positions are position_offset + n in the backward too: the tail of a sequence, given
  // its offset, gets exactly the gradient it gets as part of the whole.
  std::mt19937_64 rng(ll::test::test_seeds().back());
  const int64_t n = 12, heads = 2, hd = 32, split = 5;
  const auto g = ll::test::random_uniform(rng, size_t(n * heads * hd));
  auto whole = g;
  ll::cpu::rope_backward(whole.data(), n, heads, hd, 700, ll::test::linear_freqs(hd, 4.0, 10000.0));
  std::vector<float> tail(g.begin() + split * heads * hd, g.end());
  ll::cpu::rope_backward(tail.data(), n - split, heads, hd, 700 + split,
                         ll::test::linear_freqs(hd, 4.0, 10000.0));
  CHECK(std::equal(tail.begin(), tail.end(), whole.begin() + split * heads * hd));
}

TEST_CASE("rope_backward rejects the arguments rope_forward rejects") {
  std::vector<float> x(6, 1.0f);
  const ll::RopeFrequencies one{{1.0f}, 1.0f}, zero{{1.0f}, 0.0f};  // [1]: head_dim 2
  CHECK_THROWS_AS(ll::cpu::rope_backward(x.data(), 1, 2, 3, 0, one), ll::Error);
  CHECK_THROWS_AS(ll::cpu::rope_backward(x.data(), 1, 1, 6, 0, one), ll::Error);
  CHECK_THROWS_AS(ll::cpu::rope_backward(x.data(), 1, 3, 2, 0, zero), ll::Error);
}

}  // namespace
