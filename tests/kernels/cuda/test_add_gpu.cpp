// CUDA add_inplace_bf16 / add_inplace_f32 bitwise against the host (fp32 add, one rounding to
// bf16), on the 16-byte path with a peeled head (equally misaligned pointers), the scalar path
// (differently misaligned), odd sizes, x == y, and no writes outside [x, x + n).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "tests/gpu_skip.h"
#include "tests/kernels/kernel_test_util.h"

#if defined(LL_HAVE_CUDA)
#include "kernels/cuda/add.cuh"
#include "tests/kernels/add_test_cases.h"
#include "tests/kernels/cuda/gpu_test_util.h"

namespace {
using ll::test::add_cases::kOffsets;
using ll::test::add_cases::kSizes;
using ll::test::add_cases::Offsets;
using ll::test::add_cases::Size;
}  // namespace
#endif

TEST_CASE("add_inplace_bf16 (cuda) equals the host bitwise") {
  ll::test::require_gpu();
#if defined(LL_HAVE_CUDA)
  using namespace ll::test;
  for (const uint64_t seed : test_seeds()) {
    std::mt19937_64 rng(seed);
    for (const Size size : kSizes) {
      const int64_t n = size.n;
      for (const Offsets o : kOffsets) {
        INFO("seed " << seed << " n " << n << " offsets x " << o.x << " y " << o.y);
        const auto d = add_cases::make_data(rng, n, o, true);
        const auto &x = d.x, &y = d.y, &want = d.want;
        auto d_x = upload_bf16(x);
        auto d_y = upload_bf16(y);
        ll::cuda::add_inplace_bf16(d_x.get() + o.x, d_y.get() + o.y, n, 0);
        device_sync();
        CHECK_MESSAGE(same_bytes(download_bf16(d_x), want), "x differs from the host");
        CHECK_MESSAGE(same_bytes(download_bf16(d_y), y), "y changed");

        // x == y: doubling.
        auto d_z = upload_bf16(x);
        ll::cuda::add_inplace_bf16(d_z.get() + o.x, d_z.get() + o.x, n, 0);
        device_sync();
        CHECK_MESSAGE(same_bytes(download_bf16(d_z), d.twice), "x += x differs from 2x");
      }
    }
  }
  ll::cuda::add_inplace_bf16(nullptr, nullptr, 0, 0);
  CHECK_THROWS_AS(ll::cuda::add_inplace_bf16(nullptr, nullptr, -1, 0), ll::Error);
#endif
}

TEST_CASE("add_inplace_f32 (cuda) equals the host bitwise") {
  ll::test::require_gpu();
#if defined(LL_HAVE_CUDA)
  using namespace ll::test;
  for (const uint64_t seed : test_seeds()) {
    std::mt19937_64 rng(seed);
    for (const Size size : kSizes) {
      const int64_t n = size.n;
      for (const Offsets o : kOffsets) {
        INFO("seed " << seed << " n " << n << " offsets x " << o.x << " y " << o.y);
        const auto d = add_cases::make_data(rng, n, o, false);
        const auto &x = d.x, &y = d.y, &want = d.want;
        auto d_x = upload(x);
        auto d_y = upload(y);
        ll::cuda::add_inplace_f32(d_x.get() + o.x, d_y.get() + o.y, n, 0);
        device_sync();
        CHECK_MESSAGE(same_bytes(download(d_x), want), "x differs from the host");
        CHECK_MESSAGE(same_bytes(download(d_y), y), "y changed");

        auto d_z = upload(x);
        ll::cuda::add_inplace_f32(d_z.get() + o.x, d_z.get() + o.x, n, 0);
        device_sync();
        CHECK_MESSAGE(same_bytes(download(d_z), d.twice), "x += x differs from 2x");
      }
    }
  }
  ll::cuda::add_inplace_f32(nullptr, nullptr, 0, 0);
  CHECK_THROWS_AS(ll::cuda::add_inplace_f32(nullptr, nullptr, -1, 0), ll::Error);
#endif
}
