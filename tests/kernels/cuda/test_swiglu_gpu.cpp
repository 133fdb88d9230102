// CUDA swiglu forward/backward against the CPU reference on the same bf16-rounded inputs,
// on the 16-byte path, the scalar path (misaligned pointers) and in place.
#include <doctest/doctest.h>

#include <random>
#include <vector>

#include "tests/gpu_skip.h"
#include "tests/kernels/kernel_test_util.h"

#if defined(LL_HAVE_CUDA)
#include "kernels/cuda/swiglu.cuh"
#include "tests/kernels/cuda/gpu_test_util.h"
#include "tests/kernels/swiglu_test_cases.h"
#endif

TEST_CASE("swiglu (cuda) forward and backward match the CPU reference") {
  ll::test::require_gpu();
#if defined(LL_HAVE_CUDA)
  using namespace ll::test;
  for (const uint64_t seed : test_seeds()) {
    std::mt19937_64 rng(seed);
    for (const int64_t n : swiglu_cases::kSizes) {
      for (const int64_t offset : swiglu_cases::kOffsets) {
        INFO("seed " << seed << " n " << n << " offset " << offset);
        const swiglu_cases::Data d = swiglu_cases::make_data(rng, n, offset);
        const auto check = [n, offset](const DeviceBuffer<bf16>& got,
                                       const std::vector<float>& ref) {
          swiglu_cases::check_output(download_bf16(got.get() + offset, size_t(n)), ref);
        };
        auto d_gate = upload_bf16(d.gate);
        auto d_up = upload_bf16(d.up);
        auto d_dout = upload_bf16(d.dout);
        const size_t len = d.gate.size();
        DeviceBuffer<bf16> d_out(len), d_dg(len), d_du(len);
        d_out.poison();
        d_dg.poison();
        d_du.poison();
        ll::cuda::swiglu_forward(d_out.get() + offset, d_gate.get() + offset, d_up.get() + offset,
                                 n, 0);
        ll::cuda::swiglu_backward(d_dg.get() + offset, d_du.get() + offset, d_dout.get() + offset,
                                  d_gate.get() + offset, d_up.get() + offset, n, 0);
        device_sync();
        check(d_out, d.out_ref);
        check(d_dg, d.dg_ref);
        check(d_du, d.du_ref);

        // In place: backward with dgate = gate and dup = up, then forward with out = gate.
        auto g2 = upload_bf16(d.gate);
        auto u2 = upload_bf16(d.up);
        ll::cuda::swiglu_backward(g2.get() + offset, u2.get() + offset, d_dout.get() + offset,
                                  g2.get() + offset, u2.get() + offset, n, 0);
        device_sync();
        check(g2, d.dg_ref);
        check(u2, d.du_ref);
        auto g3 = upload_bf16(d.gate);
        ll::cuda::swiglu_forward(g3.get() + offset, g3.get() + offset, d_up.get() + offset, n, 0);
        device_sync();
        check(g3, d.out_ref);
      }
    }
  }
  ll::cuda::swiglu_forward(nullptr, nullptr, nullptr, 0, 0);
  ll::cuda::swiglu_backward(nullptr, nullptr, nullptr, nullptr, nullptr, 0, 0);
  CHECK_THROWS_AS(ll::cuda::swiglu_forward(nullptr, nullptr, nullptr, -1, 0), ll::Error);
#endif
}
