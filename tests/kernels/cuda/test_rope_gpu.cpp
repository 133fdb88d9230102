// CUDA rope forward/backward (in place, bf16) against the CPU reference on the same
// bf16-rounded inputs, including long positions and non-power-of-two scales, where one fp32
// ulp of the angle would show.
#include <doctest/doctest.h>

#include <random>
#include <vector>

#include "tests/gpu_skip.h"
#include "tests/kernels/kernel_test_util.h"

#if defined(LL_HAVE_CUDA)
#include "kernels/cpu/rope.h"
#include "kernels/cuda/rope.cuh"
#include "tests/kernels/cuda/gpu_test_util.h"
#endif

#if defined(LL_HAVE_CUDA)
namespace {
struct Case {
  int64_t n, heads, hd, offset;
  double scale, theta;
};
const Case kCases[] = {
    {1, 1, 2, 0, 1.0, 10000.0},         {3, 2, 6, 5, 1.0, 10000.0},
    {5, 3, 64, 0, 4.0, 10000.0},        {17, 4, 128, 100000, 4.0, 10000.0},
    {33, 2, 128, 99000, 2.5, 500000.0}, {9, 3, 256, 8191, 8.0, 1000000.0},
    {300, 1, 10, 7, 1.0, 10000.0},
};
}  // namespace
#endif

TEST_CASE("rope (cuda) forward and backward match the CPU reference") {
  ll::test::require_gpu();
#if defined(LL_HAVE_CUDA)
  using namespace ll::test;
  for (const uint64_t seed : test_seeds()) {
    std::mt19937_64 rng(seed);
    for (const Case& c : kCases) {
      INFO("seed " << seed << " [" << c.n << ", " << c.heads << ", " << c.hd << "] offset "
                   << c.offset << " scale " << c.scale << " theta " << c.theta);
      const size_t len = size_t(c.n * c.heads * c.hd);
      const auto x = round_bf16(random_uniform(rng, len, -2.0f, 2.0f));  // [N, H, hd]
      std::vector<float> fwd_ref = x, bwd_ref = x;
      ll::cpu::rope_forward(fwd_ref.data(), c.n, c.heads, c.hd, c.offset, c.scale, c.theta);
      ll::cpu::rope_backward(bwd_ref.data(), c.n, c.heads, c.hd, c.offset, c.scale, c.theta);

      auto d_f = upload_bf16(x);
      auto d_b = upload_bf16(x);
      ll::cuda::rope_forward(d_f.get(), c.n, c.heads, c.hd, c.offset, c.scale, c.theta, 0);
      ll::cuda::rope_backward(d_b.get(), c.n, c.heads, c.hd, c.offset, c.scale, c.theta, 0);
      device_sync();
      // fp32 rotation, then one bf16 rounding; atol covers outputs that cancel to ~0.
      check_close(download_bf16(d_f), to_double(fwd_ref), 1e-5, kBf16Rtol, 1e-2);
      check_close(download_bf16(d_b), to_double(bwd_ref), 1e-5, kBf16Rtol, 1e-2);
    }
  }
  ll::cuda::rope_forward(nullptr, 0, 4, 64, 0, 1.0, 10000.0, 0);
  CHECK_THROWS_AS(ll::cuda::rope_forward(nullptr, 1, 1, 7, 0, 1.0, 10000.0, 0), ll::Error);
  CHECK_THROWS_AS(ll::cuda::rope_forward(nullptr, 1, 1, 1024, 0, 1.0, 10000.0, 0), ll::Error);
  CHECK_THROWS_AS(ll::cuda::rope_backward(nullptr, 1, 1, 8, 0, 0.0, 10000.0, 0), ll::Error);
#endif
}
