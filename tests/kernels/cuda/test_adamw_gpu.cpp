// CUDA AdamW against ll::adamw_update (the CPU reference) over several steps, with and
// without weight decay and gradient scaling; the bf16 parameter copy is bf16(master).
#include <doctest/doctest.h>

#include <random>
#include <vector>

#include "tests/gpu_skip.h"
#include "tests/kernels/kernel_test_util.h"

#if defined(LL_HAVE_CUDA)
#include "kernels/cuda/adamw.cuh"
#include "optim/adamw.h"
#include "tests/kernels/adamw_test_cases.h"
#include "tests/kernels/cuda/gpu_test_util.h"
#endif

TEST_CASE("adamw_step (cuda) matches adamw_update") {
  ll::test::require_gpu();
#if defined(LL_HAVE_CUDA)
  using namespace ll::test;
  namespace cases = adamw_cases;
  for (const uint64_t seed : test_seeds()) {
    std::mt19937_64 rng(seed);
    for (const cases::Size size : cases::kSizes) {
      const int64_t n = size.n;
      for (const double wd : cases::kWeightDecays) {
        for (const float grad_scale : cases::kGradScales) {
          INFO("seed " << seed << " n " << n << " wd " << wd << " grad_scale " << grad_scale);
          const size_t un = static_cast<size_t>(n);
          std::vector<float> master = cases::initial_master(rng, un), m(un, 0.0f), v(un, 0.0f);
          auto d_master = upload(master);
          auto d_m = upload(m);
          auto d_v = upload(v);
          DeviceBuffer<float> d_grad(un);
          DeviceBuffer<bf16> d_param(un);
          for (int64_t t = 1; t <= 3; ++t) {
            const auto grad = cases::random_grad(rng, un);
            LL_CUDA_CHECK(
                cudaMemcpy(d_grad.get(), grad.data(), d_grad.bytes(), cudaMemcpyHostToDevice));
            const ll::AdamWStep step = cases::make_step(t, wd, grad_scale);
            ll::adamw_update(master.data(), grad.data(), m.data(), v.data(), n, step);
            d_param.poison();
            ll::cuda::adamw_step(d_master.get(), d_grad.get(), d_m.get(), d_v.get(), d_param.get(),
                                 n, step, 0);
            device_sync();
            const auto got_master = download(d_master);
            cases::check_master(got_master, master);
            cases::check_m(download(d_m), m);
            cases::check_v(download(d_v), v);
            cases::check_param(download_bf16(d_param), got_master);
          }
          // A null param pointer skips the copy.
          ll::AdamWStep step;
          step.lr = 1e-3;
          step.step = 4;
          ll::cuda::adamw_step(d_master.get(), d_grad.get(), d_m.get(), d_v.get(), nullptr, n, step,
                               0);
          device_sync();
        }
      }
    }
  }
  ll::AdamWStep step;
  ll::cuda::adamw_step(nullptr, nullptr, nullptr, nullptr, nullptr, 0, step, 0);
  step.step = 0;
  CHECK_THROWS_AS(ll::cuda::adamw_step(nullptr, nullptr, nullptr, nullptr, nullptr, 1, step, 0),
                  ll::Error);
#endif
}
