// CUDA sum_squares (fp32 in, double out) against a long double host sum; deterministic.
#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <vector>

#include "tests/gpu_skip.h"
#include "tests/kernels/kernel_test_util.h"

#if defined(LL_HAVE_CUDA)
#include "kernels/cuda/reduce.cuh"
#include "tests/kernels/cuda/gpu_test_util.h"
#endif

TEST_CASE("sum_squares (cuda) matches the host sum and is deterministic") {
  ll::test::require_gpu();
#if defined(LL_HAVE_CUDA)
  using namespace ll::test;
  DeviceBuffer<double> scratch(ll::cuda::sum_squares_scratch_bytes() / sizeof(double));
  DeviceBuffer<double> d_result(1);
  for (const uint64_t seed : test_seeds()) {
    std::mt19937_64 rng(seed);
    for (const int64_t n : {int64_t(0), int64_t(1), int64_t(255), int64_t(256), int64_t(257),
                            int64_t(131073), int64_t(3000001)}) {
      INFO("seed " << seed << " n " << n);
      const auto x = random_uniform(rng, static_cast<size_t>(n), -3.0f, 3.0f);
      long double ref = 0.0L;
      for (const float f : x) ref += (long double)f * (long double)f;
      auto d_x = upload(x);
      double results[2] = {0.0, 0.0};
      for (int run = 0; run < 2; ++run) {
        d_result.poison();
        ll::cuda::sum_squares(d_result.get(), d_x.get(), n, run == 0 ? nullptr : scratch.get(), 0);
        device_sync();
        results[run] = download(d_result)[0];
      }
      CHECK(std::isfinite(results[0]));
      const double err = std::fabs(results[0] - double(ref));
      CHECK_MESSAGE(err <= 1e-13 * double(ref) + 1e-300,
                    "sum " << results[0] << " ref " << double(ref));
      CHECK_MESSAGE(same_bytes(std::vector<double>{results[0]}, std::vector<double>{results[1]}),
                    "two runs differ");
    }
  }
#endif
}
