// CUDA rmsnorm forward/backward against the CPU reference on the same bf16-rounded inputs.
#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <vector>

#include "tests/gpu_skip.h"
#include "tests/kernels/kernel_test_util.h"

#if defined(LL_HAVE_CUDA)
#include "kernels/cuda/rmsnorm.cuh"
#include "tests/kernels/cuda/gpu_test_util.h"
#include "tests/kernels/rmsnorm_test_cases.h"

namespace {
using ll::test::rmsnorm_cases::kEps;
using ll::test::rmsnorm_cases::kShapes;
using ll::test::rmsnorm_cases::Shape;
// The misaligned-pointer shapes are the emulator test's (its host buffers place them).
bool runs_here(const Shape& s) { return s.offset == 0; }
}  // namespace
#endif

TEST_CASE("rmsnorm_forward (cuda) matches the CPU reference") {
  ll::test::require_gpu();
#if defined(LL_HAVE_CUDA)
  using namespace ll::test;
  namespace cases = rmsnorm_cases;
  for (const uint64_t seed : test_seeds()) {
    std::mt19937_64 rng(seed);
    for (const Shape s : kShapes) {
      if (!runs_here(s)) continue;
      INFO("seed " << seed << " shape [" << s.n << ", " << s.d << "]");
      const cases::Forward f = cases::make_forward(s, rng);
      auto dx = upload_bf16(f.x);
      auto dw = upload_bf16(f.w);
      DeviceBuffer<bf16> dout(f.x.size());
      DeviceBuffer<float> drstd(size_t(s.n));
      dout.poison();
      drstd.poison();
      ll::cuda::rmsnorm_forward(dout.get(), drstd.get(), dx.get(), dw.get(), s.n, s.d, kEps, 0);
      device_sync();
      cases::check_out(download_bf16(dout), f.out_ref);
      cases::check_rstd(download(drstd), f.rstd_ref);

      // In place (out aliases x), without rstd.
      ll::cuda::rmsnorm_forward(dx.get(), nullptr, dx.get(), dw.get(), s.n, s.d, kEps, 0);
      device_sync();
      cases::check_out(download_bf16(dx), f.out_ref);
    }
  }
  // N = 0 launches nothing; bad shapes throw.
  ll::cuda::rmsnorm_forward(nullptr, nullptr, nullptr, nullptr, 0, 8, kEps, 0);
  CHECK_THROWS_AS(ll::cuda::rmsnorm_forward(nullptr, nullptr, nullptr, nullptr, 1, 0, kEps, 0),
                  ll::Error);
#endif
}

TEST_CASE("rmsnorm_backward (cuda) matches the CPU reference and is deterministic") {
  ll::test::require_gpu();
#if defined(LL_HAVE_CUDA)
  using namespace ll::test;
  namespace cases = rmsnorm_cases;
  for (const uint64_t seed : test_seeds()) {
    std::mt19937_64 rng(seed);
    for (const Shape s : kShapes) {
      if (!runs_here(s)) continue;
      INFO("seed " << seed << " shape [" << s.n << ", " << s.d << "]");
      const cases::Backward in = cases::make_backward(s, rng);
      auto d_x = upload_bf16(in.x);
      auto d_w = upload_bf16(in.w);
      auto d_g = upload_bf16(in.g);
      auto d_rstd = upload(in.rstd);
      DeviceBuffer<float> scratch(ll::cuda::rmsnorm_backward_scratch_bytes(s.n, s.d) /
                                  sizeof(float));
      std::vector<float> first_dx, first_dw;
      for (int run = 0; run < 2; ++run) {
        auto d_dx = upload_bf16(in.dx0);
        auto d_dw = upload(in.dw0);
        // Run 0 lets the launcher allocate its scratch, run 1 passes one.
        ll::cuda::rmsnorm_backward(d_dx.get(), d_dw.get(), d_g.get(), d_x.get(), d_w.get(),
                                   d_rstd.get(), s.n, s.d, run == 0 ? nullptr : scratch.get(), 0);
        device_sync();
        const auto got_dx = download_bf16(d_dx);
        const auto got_dw = download(d_dw);
        cases::check_dx(got_dx, in.dx_ref);
        cases::check_dw(s, got_dw, in.dw_ref);
        if (run == 0) {
          first_dx = got_dx;
          first_dw = got_dw;
        } else {
          CHECK_MESSAGE(same_bytes(first_dx, got_dx), "dx differs between two runs");
          CHECK_MESSAGE(same_bytes(first_dw, got_dw), "dweight differs between two runs");
        }
      }
      // Frozen norm: dweight null, dx the same.
      auto d_dx = upload_bf16(in.dx0);
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
