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
#include "tests/kernels/cuda/gpu_test_util.h"
#endif

#if defined(LL_HAVE_CUDA)
namespace {

const int64_t kSizes[] = {0, 1, 7, 1000003};
// Element offsets of x and y from a 256-byte aligned allocation.
struct Offsets {
  int64_t x, y;
};
const Offsets kOffsets[] = {{0, 0}, {1, 1}, {3, 3}, {0, 1}, {5, 2}, {7, 0}};
constexpr int64_t kPad = 16;  // elements around the used range, checked to stay untouched

// Random values spread over a few binades, so that the sums round.
std::vector<float> random_values(std::mt19937_64& rng, size_t n) {
  auto v = ll::test::random_uniform(rng, n, -4.0f, 4.0f);
  std::uniform_int_distribution<int> e(-6, 6);
  for (float& x : v) x = std::ldexp(x, e(rng));
  return v;
}

}  // namespace
#endif

TEST_CASE("add_inplace_bf16 (cuda) equals the host bitwise") {
  ll::test::require_gpu();
#if defined(LL_HAVE_CUDA)
  using namespace ll::test;
  for (const uint64_t seed : test_seeds()) {
    std::mt19937_64 rng(seed);
    for (const int64_t n : kSizes) {
      for (const Offsets o : kOffsets) {
        INFO("seed " << seed << " n " << n << " offsets x " << o.x << " y " << o.y);
        const size_t len = size_t(n + kPad);
        const auto x = round_bf16(random_values(rng, len));
        const auto y = round_bf16(random_values(rng, len));
        std::vector<float> want = x;
        for (int64_t i = 0; i < n; ++i)
          want[size_t(o.x + i)] = round_bf16({x[size_t(o.x + i)] + y[size_t(o.y + i)]})[0];
        auto d_x = upload_bf16(x);
        auto d_y = upload_bf16(y);
        ll::cuda::add_inplace_bf16(d_x.get() + o.x, d_y.get() + o.y, n, 0);
        device_sync();
        CHECK_MESSAGE(same_bytes(download_bf16(d_x), want), "x differs from the host");
        CHECK_MESSAGE(same_bytes(download_bf16(d_y), y), "y changed");

        // x == y: doubling.
        std::vector<float> twice = x;
        for (int64_t i = 0; i < n; ++i) twice[size_t(o.x + i)] = 2.0f * x[size_t(o.x + i)];
        auto d_z = upload_bf16(x);
        ll::cuda::add_inplace_bf16(d_z.get() + o.x, d_z.get() + o.x, n, 0);
        device_sync();
        CHECK_MESSAGE(same_bytes(download_bf16(d_z), twice), "x += x differs from 2x");
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
    for (const int64_t n : kSizes) {
      for (const Offsets o : kOffsets) {
        INFO("seed " << seed << " n " << n << " offsets x " << o.x << " y " << o.y);
        const size_t len = size_t(n + kPad);
        const auto x = random_values(rng, len);
        const auto y = random_values(rng, len);
        std::vector<float> want = x;
        for (int64_t i = 0; i < n; ++i)
          want[size_t(o.x + i)] = x[size_t(o.x + i)] + y[size_t(o.y + i)];
        auto d_x = upload(x);
        auto d_y = upload(y);
        ll::cuda::add_inplace_f32(d_x.get() + o.x, d_y.get() + o.y, n, 0);
        device_sync();
        CHECK_MESSAGE(same_bytes(download(d_x), want), "x differs from the host");
        CHECK_MESSAGE(same_bytes(download(d_y), y), "y changed");

        std::vector<float> twice = x;
        for (int64_t i = 0; i < n; ++i) twice[size_t(o.x + i)] = 2.0f * x[size_t(o.x + i)];
        auto d_z = upload(x);
        ll::cuda::add_inplace_f32(d_z.get() + o.x, d_z.get() + o.x, n, 0);
        device_sync();
        CHECK_MESSAGE(same_bytes(download(d_z), twice), "x += x differs from 2x");
      }
    }
  }
  ll::cuda::add_inplace_f32(nullptr, nullptr, 0, 0);
  CHECK_THROWS_AS(ll::cuda::add_inplace_f32(nullptr, nullptr, -1, 0), ll::Error);
#endif
}
