#pragma once
// The sum_squares kernel tests' table, shared by test_reduce_gpu.cpp (on a GPU) and
// test_reduce_emu.cpp (the SIMT emulator): the sizes, the inputs, the long double host sum and
// the tolerance. Include under LL_HAVE_CUDA or LL_HAVE_SIMT_EMULATOR (after the emulator's
// prelude).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "tests/kernels/kernel_test_util.h"

namespace ll::test::reduce_cases {

struct Size {
  int64_t n;
  bool emu_slow;  // skipped by the emulator test (slow there)
  bool gpu_only;  // not a kernel (n == 0 is reduce.cu's memset): the GPU test's only
};
// Nothing; one element; one block exactly and one element past it; 131073: 512 blocks (the
// cap), one thread two elements; 300001: every thread two or three; 3000001: many per thread.
inline const Size kSizes[] = {
    {0, false, true},    {1, false, false},      {255, false, false},    {256, false, false},
    {257, false, false}, {131073, false, false}, {300001, false, false}, {3000001, true, false},
};

// x [n] and its sum of squares in long double.
struct Data {
  std::vector<float> x;
  long double ref = 0.0L;
};
inline Data make_data(std::mt19937_64& rng, int64_t n) {
  Data d;
  d.x = random_uniform(rng, size_t(n), -3.0f, 3.0f);
  for (const float f : d.x) d.ref += (long double)f * (long double)f;
  return d;
}

// fp32 squares summed in double: within 1e-13 of the sum.
inline void check_sum(double got, long double ref) {
  CHECK(std::isfinite(got));
  const double err = std::fabs(got - double(ref));
  CHECK_MESSAGE(err <= 1e-13 * double(ref) + 1e-300, "sum " << got << " ref " << double(ref));
}

}  // namespace ll::test::reduce_cases
