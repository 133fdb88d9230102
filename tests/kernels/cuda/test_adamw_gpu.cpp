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
#include "tests/kernels/cuda/gpu_test_util.h"
#endif

TEST_CASE("adamw_step (cuda) matches adamw_update") {
  ll::test::require_gpu();
#if defined(LL_HAVE_CUDA)
  using namespace ll::test;
  for (const uint64_t seed : test_seeds()) {
    std::mt19937_64 rng(seed);
    for (const int64_t n : {int64_t(1), int64_t(7), int64_t(1000), int64_t(100003)}) {
      for (const double wd : {0.0, 0.1}) {
        for (const float grad_scale : {1.0f, 0.37f}) {
          INFO("seed " << seed << " n " << n << " wd " << wd << " grad_scale " << grad_scale);
          const size_t un = static_cast<size_t>(n);
          std::vector<float> master = random_uniform(rng, un), m(un, 0.0f), v(un, 0.0f);
          auto d_master = upload(master);
          auto d_m = upload(m);
          auto d_v = upload(v);
          DeviceBuffer<float> d_grad(un);
          DeviceBuffer<bf16> d_param(un);
          for (int64_t t = 1; t <= 3; ++t) {
            const auto grad = random_uniform(rng, un, -2.0f, 2.0f);
            LL_CUDA_CHECK(
                cudaMemcpy(d_grad.get(), grad.data(), d_grad.bytes(), cudaMemcpyHostToDevice));
            ll::AdamWStep step;
            step.config.weight_decay = wd;
            step.lr = 1e-3 * double(t);
            step.step = t;
            step.grad_scale = grad_scale;
            ll::adamw_update(master.data(), grad.data(), m.data(), v.data(), n, step);
            d_param.poison();
            ll::cuda::adamw_step(d_master.get(), d_grad.get(), d_m.get(), d_v.get(), d_param.get(),
                                 n, step, 0);
            device_sync();
            // Same fp32 operations in the same order: equal up to the host's own rounding
            // choices (e.g. a contracted fma), i.e. an ulp or two.
            const auto got_master = download(d_master);
            check_close(got_master, to_double(master), 1e-7, 1e-6, 1e-6);
            check_close(download(d_m), to_double(m), 1e-9, 1e-6, 1e-6);
            check_close(download(d_v), to_double(v), 1e-12, 1e-6, 1e-6);
            const auto param = download_bf16(d_param);
            size_t mismatched = 0;
            for (size_t i = 0; i < un; ++i)
              if (f32_to_bf16_bits(param[i]) != f32_to_bf16_bits(got_master[i])) ++mismatched;
            CHECK_MESSAGE(mismatched == 0, mismatched << " bf16 params != bf16(master)");
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
