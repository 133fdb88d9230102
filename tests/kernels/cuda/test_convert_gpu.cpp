// CUDA f32 <-> bf16 conversions and fills: bitwise against the host's round-to-nearest-even.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "tests/gpu_skip.h"
#include "tests/kernels/kernel_test_util.h"

#if defined(LL_HAVE_CUDA)
#include "kernels/cuda/convert.cuh"
#include "tests/kernels/convert_test_cases.h"
#include "tests/kernels/cuda/gpu_test_util.h"
#endif

TEST_CASE("convert and fill (cuda) are exact") {
  ll::test::require_gpu();
#if defined(LL_HAVE_CUDA)
  using namespace ll::test;
  namespace cases = convert_cases;
  for (const uint64_t seed : test_seeds()) {
    std::mt19937_64 rng(seed);
    for (const cases::Size size : cases::kSizes) {
      const int64_t n = size.n;
      INFO("seed " << seed << " n " << n);
      const size_t un = static_cast<size_t>(n);
      const cases::Data in = cases::make_data(rng, n);
      auto d_x = upload(in.x);
      DeviceBuffer<bf16> d_b(un);
      d_b.poison();
      ll::cuda::convert_f32_to_bf16(d_b.get(), d_x.get(), n, 0);
      device_sync();
      std::vector<uint16_t> bits(un);
      LL_CUDA_CHECK(cudaMemcpy(bits.data(), d_b.get(), d_b.bytes(), cudaMemcpyDeviceToHost));
      cases::check_to_bf16(bits, in);

      DeviceBuffer<bf16> d_b2(un);
      LL_CUDA_CHECK(cudaMemcpy(d_b2.get(), in.b.data(), d_b2.bytes(), cudaMemcpyHostToDevice));
      DeviceBuffer<float> d_f(un);
      d_f.poison();
      ll::cuda::convert_bf16_to_f32(d_f.get(), d_b2.get(), n, 0);
      device_sync();
      cases::check_to_f32(download(d_f), in);

      // Fills write every element.
      DeviceBuffer<float> d_fill(un);
      d_fill.poison();
      ll::cuda::fill_f32(d_fill.get(), cases::kFillF32, n, 0);
      DeviceBuffer<bf16> d_fillb(un);
      d_fillb.poison();
      ll::cuda::fill_bf16(d_fillb.get(), cases::kFillBf16, n, 0);
      device_sync();
      cases::check_fill_f32(download(d_fill), n);
      cases::check_fill_bf16(download_bf16(d_fillb), n);
    }
  }
  // NaN stays NaN.
  auto d_nan = upload(std::vector<float>{std::numeric_limits<float>::quiet_NaN()});
  DeviceBuffer<bf16> d_out(1);
  ll::cuda::convert_f32_to_bf16(d_out.get(), d_nan.get(), 1, 0);
  device_sync();
  CHECK(std::isnan(download_bf16(d_out)[0]));
  ll::cuda::convert_f32_to_bf16(nullptr, nullptr, 0, 0);
  ll::cuda::convert_bf16_to_f32(nullptr, nullptr, 0, 0);
  ll::cuda::fill_f32(nullptr, 1.0f, 0, 0);
  ll::cuda::fill_bf16(nullptr, 1.0f, 0, 0);
#endif
}
