#pragma once
// The in-place add kernel tests' table, shared by test_add_gpu.cpp (on a GPU) and
// test_add_emu.cpp (the SIMT emulator): the sizes, the offsets of x and y, their inputs (spread
// over a few binades, so that the sums round) and the host result (fp32 add, one rounding to
// bf16), compared bitwise. Include under LL_HAVE_CUDA or LL_HAVE_SIMT_EMULATOR (after the
// emulator's prelude).
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "tests/kernels/cuda/gpu_test_util.h"
#include "tests/kernels/kernel_test_util.h"

namespace ll::test::add_cases {

struct Size {
  int64_t n;
  bool emu_slow;  // skipped by the emulator test (slow there)
};
// n = 0 (nothing to do), n smaller than the head, odd sizes; 4099: the 16-byte path in 2 (bf16)
// or 4 (f32) blocks, the element path in 17; a million elements.
inline const Size kSizes[] = {{0, false},  {1, false},    {7, false},
                              {20, false}, {4099, false}, {1000003, true}};
// Element offsets of x and y from an aligned allocation: equal (the 16-byte path with a peeled
// head) and different (the element-by-element path).
struct Offsets {
  int64_t x, y;
};
inline const Offsets kOffsets[] = {{0, 0}, {1, 1}, {3, 3}, {0, 1}, {5, 2}, {7, 0}};
inline constexpr int64_t kPad = 16;  // elements around the used range, checked to stay untouched

// Random values spread over a few binades, so that the sums round.
inline std::vector<float> random_values(std::mt19937_64& rng, size_t n) {
  auto v = random_uniform(rng, n, -4.0f, 4.0f);
  std::uniform_int_distribution<int> e(-6, 6);
  for (float& x : v) x = std::ldexp(x, e(rng));
  return v;
}

// x and y [n + kPad] (bf16-rounded for bf16); the host results: want = x with
// x[o.x + i] += y[o.y + i], twice = x with x[o.x + i] += x[o.x + i] (rounded to bf16 for bf16).
struct Data {
  std::vector<float> x, y, want, twice;
};
inline Data make_data(std::mt19937_64& rng, int64_t n, Offsets o, bool bf16) {
  const size_t len = size_t(n + kPad);
  Data d;
  d.x = random_values(rng, len);
  d.y = random_values(rng, len);
  if (bf16) {
    d.x = round_bf16(d.x);
    d.y = round_bf16(d.y);
  }
  d.want = d.x;
  d.twice = d.x;
  for (int64_t i = 0; i < n; ++i) {
    const size_t ix = size_t(o.x + i), iy = size_t(o.y + i);
    d.want[ix] = d.x[ix] + d.y[iy];
    d.twice[ix] = 2.0f * d.x[ix];
  }
  if (bf16) {
    d.want = round_bf16(d.want);
    d.twice = round_bf16(d.twice);
  }
  return d;
}

}  // namespace ll::test::add_cases
