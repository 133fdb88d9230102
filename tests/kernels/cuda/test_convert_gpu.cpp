// CUDA f32 <-> bf16 conversions and fills: bitwise against the host's round-to-nearest-even.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "tests/gpu_skip.h"
#include "tests/kernels/kernel_test_util.h"

#if defined(LL_HAVE_CUDA)
#include "kernels/cuda/convert.cuh"
#include "tests/kernels/cuda/gpu_test_util.h"
#endif

TEST_CASE("convert and fill (cuda) are exact") {
  ll::test::require_gpu();
#if defined(LL_HAVE_CUDA)
  using namespace ll::test;
  for (const uint64_t seed : test_seeds()) {
    std::mt19937_64 rng(seed);
    for (const int64_t n : {int64_t(1), int64_t(9), int64_t(1000), int64_t(65537)}) {
      INFO("seed " << seed << " n " << n);
      const size_t un = static_cast<size_t>(n);
      auto x = random_uniform(rng, un, -1000.0f, 1000.0f);
      // Special values: ties, signed zero, subnormal, infinities, largest finite.
      const float specials[] = {0.0f,
                                -0.0f,
                                1e-40f,
                                -3.0e38f,
                                3.4e38f,
                                std::numeric_limits<float>::infinity(),
                                -std::numeric_limits<float>::infinity(),
                                1.00390625f,
                                1.01171875f};
      for (size_t i = 0; i < std::size(specials) && i < un; ++i) x[i] = specials[i];
      auto d_x = upload(x);
      DeviceBuffer<bf16> d_b(un);
      d_b.poison();
      ll::cuda::convert_f32_to_bf16(d_b.get(), d_x.get(), n, 0);
      device_sync();
      std::vector<uint16_t> bits(un);
      LL_CUDA_CHECK(cudaMemcpy(bits.data(), d_b.get(), d_b.bytes(), cudaMemcpyDeviceToHost));
      size_t bad = 0;
      for (size_t i = 0; i < un; ++i) bad += bits[i] != f32_to_bf16_bits(x[i]);
      CHECK_MESSAGE(bad == 0, bad << " conversions differ from round-to-nearest-even");

      // bf16 -> f32 of arbitrary non-NaN bit patterns is exact.
      std::uniform_int_distribution<uint32_t> pick(0, 0xffff);
      std::vector<uint16_t> b(un);
      for (auto& v : b) {
        do v = uint16_t(pick(rng));
        while ((v & 0x7fff) > 0x7f80);
      }
      DeviceBuffer<bf16> d_b2(un);
      LL_CUDA_CHECK(cudaMemcpy(d_b2.get(), b.data(), d_b2.bytes(), cudaMemcpyHostToDevice));
      DeviceBuffer<float> d_f(un);
      d_f.poison();
      ll::cuda::convert_bf16_to_f32(d_f.get(), d_b2.get(), n, 0);
      device_sync();
      const auto f = download(d_f);
      bad = 0;
      for (size_t i = 0; i < un; ++i) {
        const float want = bf16_bits_to_f32(b[i]);
        bad += std::memcmp(&f[i], &want, sizeof(float)) != 0;
      }
      CHECK_MESSAGE(bad == 0, bad << " bf16 -> f32 conversions are not exact");

      // Fills write every element.
      DeviceBuffer<float> d_fill(un);
      d_fill.poison();
      ll::cuda::fill_f32(d_fill.get(), 0.625f, n, 0);
      DeviceBuffer<bf16> d_fillb(un);
      d_fillb.poison();
      ll::cuda::fill_bf16(d_fillb.get(), 1.01171875f, n, 0);  // a tie: rounds to even
      device_sync();
      CHECK(download(d_fill) == std::vector<float>(un, 0.625f));
      CHECK(download_bf16(d_fillb) ==
            std::vector<float>(un, bf16_bits_to_f32(f32_to_bf16_bits(1.01171875f))));
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
