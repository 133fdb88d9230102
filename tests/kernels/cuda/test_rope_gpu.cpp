// CUDA rope forward/backward (in place, bf16) against the CPU reference on the same
// bf16-rounded inputs, including long positions and non-power-of-two scales, where one fp32
// ulp of the angle would show.
#include <doctest/doctest.h>

#include <random>
#include <vector>

#include "tests/gpu_skip.h"
#include "tests/kernels/kernel_test_util.h"
#include "tests/kernels/rope_scalings.h"

#if defined(LL_HAVE_CUDA)
#include "kernels/cuda/rope.cuh"
#include "tests/kernels/cuda/gpu_test_util.h"
#include "tests/kernels/rope_test_cases.h"
#endif

TEST_CASE("rope (cuda) forward and backward match the CPU reference") {
  ll::test::require_gpu();
#if defined(LL_HAVE_CUDA)
  using namespace ll::test;
  for (const uint64_t seed : test_seeds()) {
    std::mt19937_64 rng(seed);
    for (const rope_cases::Case& c : rope_cases::kCases) {
      INFO("seed " << seed << " [" << c.n << ", " << c.heads << ", " << c.hd << "] offset "
                   << c.offset << " rope " << ll::describe_rope_scaling(c.rope) << " theta "
                   << c.theta);
      const rope_cases::Data data = rope_cases::make_data(c, rng);
      auto d_f = upload_bf16(data.x);
      auto d_b = upload_bf16(data.x);
      const ll::RopeFrequencies freqs = rope_cases::freqs_of(c);
      ll::cuda::rope_forward(d_f.get(), c.n, c.heads, c.hd, c.offset, freqs, 0);
      ll::cuda::rope_backward(d_b.get(), c.n, c.heads, c.hd, c.offset, freqs, 0);
      device_sync();
      rope_cases::check_output(download_bf16(d_f), data.fwd);
      rope_cases::check_output(download_bf16(d_b), data.bwd);
    }
  }
  ll::cuda::rope_forward(nullptr, 0, 4, 64, 0, linear_freqs(64, 1.0, 10000.0), 0);
  const ll::RopeFrequencies odd{std::vector<float>(3, 1.0f), 1.0f};
  CHECK_THROWS_AS(ll::cuda::rope_forward(nullptr, 1, 1, 7, 0, odd, 0), ll::Error);
  CHECK_THROWS_AS(ll::cuda::rope_forward(nullptr, 1, 1, 1024, 0, linear_freqs(1024, 1.0, 1e4), 0),
                  ll::Error);
  CHECK_THROWS_AS(ll::cuda::rope_backward(nullptr, 1, 1, 8, 0, linear_freqs(6, 1.0, 1e4), 0),
                  ll::Error);
  ll::RopeFrequencies unscaled = linear_freqs(8, 1.0, 1e4);
  unscaled.attention_scaling = 0.0f;
  CHECK_THROWS_AS(ll::cuda::rope_backward(nullptr, 1, 1, 8, 0, unscaled, 0), ll::Error);
#endif
}
