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
#include "tests/kernels/reduce_test_cases.h"
#endif

TEST_CASE("sum_squares (cuda) matches the host sum and is deterministic") {
  ll::test::require_gpu();
#if defined(LL_HAVE_CUDA)
  using namespace ll::test;
  namespace cases = reduce_cases;
  DeviceBuffer<double> scratch(ll::cuda::sum_squares_scratch_bytes() / sizeof(double));
  DeviceBuffer<double> d_result(1);
  for (const uint64_t seed : test_seeds()) {
    std::mt19937_64 rng(seed);
    for (const cases::Size size : cases::kSizes) {
      const int64_t n = size.n;
      INFO("seed " << seed << " n " << n);
      const cases::Data in = cases::make_data(rng, n);
      auto d_x = upload(in.x);
      double results[2] = {0.0, 0.0};
      for (int run = 0; run < 2; ++run) {
        d_result.poison();
        ll::cuda::sum_squares(d_result.get(), d_x.get(), n, run == 0 ? nullptr : scratch.get(), 0);
        device_sync();
        results[run] = download(d_result)[0];
      }
      cases::check_sum(results[0], in.ref);
      CHECK_MESSAGE(same_bytes(std::vector<double>{results[0]}, std::vector<double>{results[1]}),
                    "two runs differ");
    }
  }
#endif
}
