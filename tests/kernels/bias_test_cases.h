#pragma once
// The bias kernel tests' table, shared by test_bias_gpu.cpp (on a GPU) and test_bias_emu.cpp
// (the SIMT emulator): the shapes, their inputs, the host results and the tolerances.
// add_bias is compared bitwise with the host (fp32 add, one rounding to bf16); bias_backward
// against a long double sum, within one fp32 rounding. Include under LL_HAVE_CUDA or
// LL_HAVE_SIMT_EMULATOR (after the emulator's prelude).
#include <doctest/doctest.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

#include "tests/kernels/cuda/gpu_test_util.h"
#include "tests/kernels/kernel_test_util.h"

namespace ll::test::bias_cases {

struct Shape {
  int64_t m, c;
  size_t offset;  // elements every tensor is shifted off the 16-byte alignment (emulator only)
  bool emu_slow;  // skipped by the emulator test (slow there)
};
// One element; C = 1 (a column; 2 row chunks at M = 65: 33 + 32 rows); M = 1; odd C (the
// element path); C % 8 == 0 (the 16-byte path); C past one 256-column block (264 = 256 + 8,
// 257 on the element path) with a ragged last row chunk (130 rows: 44 + 44 + 42); aligned C
// with misaligned pointers (element path); the 256-chunk cap with empty last chunks (16500
// rows: 65 a chunk, chunks 254 and 255 empty); a q_proj-wide C; M = 500k (1954 rows a chunk,
// a column's running sum up to ~5e5), with C = 24 on a GPU only (12M elements).
inline const Shape kShapes[] = {
    {1, 1, 0, false},      {65, 1, 0, false},    {1, 7, 0, false},      {1, 24, 0, false},
    {7, 13, 0, false},     {5, 64, 0, false},    {130, 264, 0, false},  {33, 257, 0, false},
    {4, 64, 1, false},     {16500, 3, 0, false}, {300, 4096, 0, false}, {500000, 1, 0, false},
    {500000, 24, 0, true},
};

// Values spread over a few binades (magnitudes up to 64), so that out + bias rounds to bf16.
// The host adds in fp32 and rounds to bf16 once, as the kernel does: the same bits.
inline std::vector<float> spread_values(std::mt19937_64& rng, size_t n) {
  auto v = random_uniform(rng, n, -4.0f, 4.0f);
  std::uniform_int_distribution<int> e(-4, 4);
  for (float& x : v) x = std::ldexp(x, e(rng));
  return v;
}

// add_bias: out [M, C] (bf16-rounded), bias [C] as bf16 (rounded) and as fp32 (not rounded);
// the host results out + bias in fp32, rounded to bf16 once.
struct Forward {
  std::vector<float> out, bias_bf16, bias_f32, want_bf16, want_f32;
};
inline Forward make_forward(const Shape& s, std::mt19937_64& rng) {
  Forward f;
  f.out = round_bf16(spread_values(rng, size_t(s.m * s.c)));
  f.bias_f32 = spread_values(rng, size_t(s.c));
  f.bias_bf16 = round_bf16(f.bias_f32);
  f.want_bf16.resize(f.out.size());
  f.want_f32.resize(f.out.size());
  for (int64_t r = 0; r < s.m; ++r) {
    for (int64_t j = 0; j < s.c; ++j) {
      const size_t i = size_t(r * s.c + j);
      f.want_bf16[i] = f.out[i] + f.bias_bf16[size_t(j)];
      f.want_f32[i] = f.out[i] + f.bias_f32[size_t(j)];
    }
  }
  f.want_bf16 = round_bf16(f.want_bf16);
  f.want_f32 = round_bf16(f.want_f32);
  return f;
}

// bias_backward: dout [M, C] (bf16-rounded; each column around its own mean in [-1, 1], so the
// running sums grow as a real gradient's may), dbias0 [C]; the reference dbias0 + column sums
// in long double and, per column, the sum of the magnitudes of its terms.
struct Backward {
  std::vector<float> dout, dbias0;
  std::vector<long double> ref, magnitude;  // [C]
};
inline Backward make_backward(const Shape& s, std::mt19937_64& rng) {
  Backward b;
  const std::vector<float> mean = random_uniform(rng, size_t(s.c), -1.0f, 1.0f);  // [C]
  b.dout = random_uniform(rng, size_t(s.m * s.c), -1.0f, 1.0f);
  for (size_t i = 0; i < b.dout.size(); ++i) b.dout[i] += mean[i % size_t(s.c)];
  b.dout = round_bf16(b.dout);
  b.dbias0 = random_uniform(rng, size_t(s.c), -4.0f, 4.0f);
  b.ref.assign(b.dbias0.begin(), b.dbias0.end());
  b.magnitude.resize(size_t(s.c));
  for (size_t j = 0; j < b.ref.size(); ++j) b.magnitude[j] = std::fabs((long double)b.dbias0[j]);
  for (int64_t r = 0; r < s.m; ++r) {
    for (int64_t j = 0; j < s.c; ++j) {
      const long double x = b.dout[size_t(r * s.c + j)];
      b.ref[size_t(j)] += x;
      b.magnitude[size_t(j)] += std::fabs(x);
    }
  }
  return b;
}

// Summed in double and rounded to fp32 once: within the fp32 unit roundoff (2^-24) of the
// exact value, plus double rounding over M additions (M * 2^-53 of the terms' magnitudes).
inline void check_dbias(const Shape& s, const std::vector<float>& got, const Backward& b) {
  REQUIRE(got.size() == b.ref.size());
  size_t bad = 0;
  for (size_t j = 0; j < got.size(); ++j) {
    const long double ref = b.ref[j];
    const long double allowed =
        std::ldexp(std::fabs(ref), -24) + std::ldexp(b.magnitude[j], -53) * (long double)(s.m + 1);
    const long double err = std::fabs((long double)got[j] - ref);
    if (!(err <= allowed) && bad++ == 0) {
      FAIL_CHECK("dbias[" << j << "] = " << got[j] << ", exact " << double(ref) << ", error "
                          << double(err) << " > " << double(allowed));
    }
  }
  CHECK_MESSAGE(bad == 0, bad << " of " << got.size() << " dbias elements out of tolerance");
}

}  // namespace ll::test::bias_cases
