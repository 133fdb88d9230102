// The CUDA sum_squares kernels (kernels/cuda/reduce_kernels.cuh) run in the SIMT emulator
// against a long double host sum, with the GPU test's tolerance, on a machine without a GPU:
// one element, one block exactly and one element past it, the 512-block cap with a grid-stride
// loop of one to several elements per thread (ragged), the 8-warp (partials) and 16-warp
// (final) block reductions. The result and the partial scratch start poisoned (NaN); each case
// runs again with the fibers in reverse order and must give the same bytes (the sum order is
// fixed). n == 0 is reduce.cu's memset, not a kernel, and is left to the GPU test.
#if defined(LL_HAVE_SIMT_EMULATOR)
#include "tests/cuda_emu/cuda_prelude.h"
#endif

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#if defined(LL_HAVE_SIMT_EMULATOR)
#include "kernels/cuda/reduce_kernels.cuh"
#include "tests/cuda_emu/emu_launcher.h"
#include "tests/kernels/cuda/emu/emu_test_util.h"
#include "tests/kernels/kernel_test_util.h"
#include "tests/kernels/reduce_test_cases.h"

namespace {

namespace emu = ll::cuda::emu;
namespace dev = ll::cuda::reduce_dev;
using ll::test::emu_util::case_seed;
using ll::test::emu_util::poisoned_vector;
using ll::test::emu_util::run_both_orders;

}  // namespace

TEST_CASE("emulated sum_squares matches the host sum and is deterministic") {
  // The GPU test's table (reduce_test_cases.h), without its sizes marked slow here or GPU-only.
  namespace cases = ll::test::reduce_cases;
  const auto seeds = ll::test::test_seeds();
  for (size_t index = 0; index < std::size(cases::kSizes); ++index) {
    const cases::Size size = cases::kSizes[index];
    if (size.emu_slow || size.gpu_only) continue;
    const int64_t n = size.n;
    const uint64_t seed = case_seed(seeds, index);
    INFO("seed " << seed << " n " << n);
    std::mt19937_64 rng(seed);
    const cases::Data in = cases::make_data(rng, n);
    const std::vector<float>& x = in.x;  // [n]

    struct Result {
      double sum = 0.0;
      std::vector<emu::KernelRun> runs;
    };
    const auto [got, rev] = run_both_orders([&] {
      Result r;
      std::vector<double> partial = poisoned_vector<double>(dev::kPartials);  // [kPartials]
      std::vector<double> result = poisoned_vector<double>(1);                // [1]
      dev::run_sum_squares(emu::EmuLauncher{&r.runs}, result.data(), partial.data(), x.data(), n);
      r.sum = result[0];
      return r;
    });
    cases::check_sum(got.sum, in.ref);
    CHECK_MESSAGE(std::memcmp(&got.sum, &rev.sum, sizeof(double)) == 0,
                  "the sum differs with the reverse thread order");

    const int64_t blocks =
        std::min<int64_t>((n + dev::kThreads - 1) / dev::kThreads, dev::kPartials);
    REQUIRE(got.runs.size() == 2);
    CHECK(got.runs[0].kernel == "sum_squares_partial_kernel");
    CHECK(got.runs[0].stats.blocks == blocks);
    CHECK(got.runs[0].stats.block_barriers == 2 * blocks);  // the two in block_sum
    CHECK(got.runs[1].kernel == "sum_squares_final_kernel");
    CHECK(got.runs[1].stats.blocks == 1);
  }
}

#else
TEST_CASE("emulated sum_squares") {
  std::printf(
      "SKIP: built without the CUDA toolkit (the emulator compiles CUDA device code "
      "with its headers)\n");
  std::exit(77);
}
#endif
