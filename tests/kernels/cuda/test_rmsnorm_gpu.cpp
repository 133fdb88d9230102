// CUDA rmsnorm forward/backward against the CPU reference on the same bf16-rounded inputs.
#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <vector>

#include "tests/gpu_skip.h"
#include "tests/kernels/kernel_test_util.h"

#if defined(LL_HAVE_CUDA)
#include "kernels/cpu/rmsnorm.h"
#include "kernels/cuda/rmsnorm.cuh"
#include "tests/kernels/cuda/gpu_test_util.h"
#endif

#if defined(LL_HAVE_CUDA)
namespace {
struct Shape {
  int64_t n, d;
};
// Odd sizes (scalar path), multiples of 8 (16-byte path), more than one dweight chunk.
const Shape kShapes[] = {{1, 1}, {3, 7}, {5, 64}, {17, 4096}, {130, 200}, {300, 96}, {1000, 24}};
}  // namespace
#endif

TEST_CASE("rmsnorm_forward (cuda) matches the CPU reference") {
  ll::test::require_gpu();
#if defined(LL_HAVE_CUDA)
  using namespace ll::test;
  const float eps = 1e-5f;
  for (const uint64_t seed : test_seeds()) {
    std::mt19937_64 rng(seed);
    for (const Shape s : kShapes) {
      INFO("seed " << seed << " shape [" << s.n << ", " << s.d << "]");
      const auto x = round_bf16(random_uniform(rng, size_t(s.n * s.d), -2.0f, 2.0f));  // [N, D]
      const auto w = round_bf16(random_uniform(rng, size_t(s.d), 0.5f, 1.5f));         // [D]
      std::vector<float> out_ref(x.size()), rstd_ref(size_t(s.n));
      ll::cpu::rmsnorm_forward(out_ref.data(), rstd_ref.data(), x.data(), w.data(), s.n, s.d, eps);

      auto dx = upload_bf16(x);
      auto dw = upload_bf16(w);
      DeviceBuffer<bf16> dout(x.size());
      DeviceBuffer<float> drstd(size_t(s.n));
      dout.poison();
      drstd.poison();
      ll::cuda::rmsnorm_forward(dout.get(), drstd.get(), dx.get(), dw.get(), s.n, s.d, eps, 0);
      device_sync();
      check_close(download_bf16(dout), to_double(out_ref), 1e-5, kBf16Rtol, 1e-2);
      // rstd: fp32 sum of squares vs the CPU's double one.
      check_close(download(drstd), to_double(rstd_ref), 0.0, 1e-5, 1e-5);

      // In place (out aliases x), without rstd.
      ll::cuda::rmsnorm_forward(dx.get(), nullptr, dx.get(), dw.get(), s.n, s.d, eps, 0);
      device_sync();
      check_close(download_bf16(dx), to_double(out_ref), 1e-5, kBf16Rtol, 1e-2);
    }
  }
  // N = 0 launches nothing; bad shapes throw.
  ll::cuda::rmsnorm_forward(nullptr, nullptr, nullptr, nullptr, 0, 8, eps, 0);
  CHECK_THROWS_AS(ll::cuda::rmsnorm_forward(nullptr, nullptr, nullptr, nullptr, 1, 0, eps, 0),
                  ll::Error);
#endif
}

TEST_CASE("rmsnorm_backward (cuda) matches the CPU reference and is deterministic") {
  ll::test::require_gpu();
#if defined(LL_HAVE_CUDA)
  using namespace ll::test;
  const float eps = 1e-5f;
  for (const uint64_t seed : test_seeds()) {
    std::mt19937_64 rng(seed);
    for (const Shape s : kShapes) {
      INFO("seed " << seed << " shape [" << s.n << ", " << s.d << "]");
      const size_t nd = size_t(s.n * s.d);
      const auto x = round_bf16(random_uniform(rng, nd, -2.0f, 2.0f));          // [N, D]
      const auto w = round_bf16(random_uniform(rng, size_t(s.d), 0.5f, 1.5f));  // [D]
      const auto g = round_bf16(random_uniform(rng, nd, -1.0f, 1.0f));          // [N, D] dout
      const auto dx0 = round_bf16(random_uniform(rng, nd, -1.0f, 1.0f));  // [N, D] residual grad
      const auto dw0 = random_uniform(rng, size_t(s.d), -1.0f, 1.0f);     // [D]
      std::vector<float> y(nd), rstd(size_t(s.n));
      ll::cpu::rmsnorm_forward(y.data(), rstd.data(), x.data(), w.data(), s.n, s.d, eps);
      std::vector<float> dx_ref = dx0, dw_ref = dw0;
      ll::cpu::rmsnorm_backward(dx_ref.data(), dw_ref.data(), g.data(), x.data(), w.data(),
                                rstd.data(), s.n, s.d);

      auto d_x = upload_bf16(x);
      auto d_w = upload_bf16(w);
      auto d_g = upload_bf16(g);
      auto d_rstd = upload(rstd);
      DeviceBuffer<float> scratch(ll::cuda::rmsnorm_backward_scratch_bytes(s.n, s.d) /
                                  sizeof(float));
      std::vector<float> first_dx, first_dw;
      for (int run = 0; run < 2; ++run) {
        auto d_dx = upload_bf16(dx0);
        auto d_dw = upload(dw0);
        // Run 0 lets the launcher allocate its scratch, run 1 passes one.
        ll::cuda::rmsnorm_backward(d_dx.get(), d_dw.get(), d_g.get(), d_x.get(), d_w.get(),
                                   d_rstd.get(), s.n, s.d, run == 0 ? nullptr : scratch.get(), 0);
        device_sync();
        const auto got_dx = download_bf16(d_dx);
        const auto got_dw = download(d_dw);
        check_close(got_dx, to_double(dx_ref), 1e-4, kBf16Rtol, 1e-2);
        // dweight: fp32 partial sums over at most a few hundred rows vs the CPU's double.
        check_close(got_dw, to_double(dw_ref), 1e-5 + 1e-6 * double(s.n), 1e-5, 1e-5);
        if (run == 0) {
          first_dx = got_dx;
          first_dw = got_dw;
        } else {
          CHECK_MESSAGE(same_bytes(first_dx, got_dx), "dx differs between two runs");
          CHECK_MESSAGE(same_bytes(first_dw, got_dw), "dweight differs between two runs");
        }
      }
      // Frozen norm: dweight null, dx the same.
      auto d_dx = upload_bf16(dx0);
      ll::cuda::rmsnorm_backward(d_dx.get(), nullptr, d_g.get(), d_x.get(), d_w.get(), d_rstd.get(),
                                 s.n, s.d, nullptr, 0);
      device_sync();
      CHECK(same_bytes(download_bf16(d_dx), first_dx));
    }
  }
  ll::cuda::rmsnorm_backward(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 0, 8, nullptr,
                             0);
#endif
}
