// CUDA swiglu forward/backward against the CPU reference on the same bf16-rounded inputs,
// on the 16-byte path, the scalar path (misaligned pointers) and in place.
#include <doctest/doctest.h>

#include <random>
#include <vector>

#include "tests/gpu_skip.h"
#include "tests/kernels/kernel_test_util.h"

#if defined(LL_HAVE_CUDA)
#include "kernels/cpu/swiglu.h"
#include "kernels/cuda/swiglu.cuh"
#include "tests/kernels/cuda/gpu_test_util.h"
#endif

#if defined(LL_HAVE_CUDA)
namespace {
const int64_t kSizes[] = {1, 7, 8, 1000, 4099, 65539};
}  // namespace
#endif

TEST_CASE("swiglu (cuda) forward and backward match the CPU reference") {
  ll::test::require_gpu();
#if defined(LL_HAVE_CUDA)
  using namespace ll::test;
  for (const uint64_t seed : test_seeds()) {
    std::mt19937_64 rng(seed);
    for (const int64_t n : kSizes) {
      for (const int64_t offset : {0, 1}) {  // offset 1: pointers not 16-byte aligned
        INFO("seed " << seed << " n " << n << " offset " << offset);
        const size_t len = size_t(n + offset);
        auto gate = round_bf16(random_uniform(rng, len, -6.0f, 6.0f));
        auto up = round_bf16(random_uniform(rng, len, -2.0f, 2.0f));
        const auto dout = round_bf16(random_uniform(rng, len, -1.0f, 1.0f));
        gate[size_t(offset)] = -100.0f;  // exp(-g) overflows: silu = -0, dgate = 0
        if (n > 1) gate[size_t(offset) + 1] = 100.0f;
        // References over the n elements used.
        const size_t un = static_cast<size_t>(n);
        std::vector<float> out_ref(un), dg_ref(un), du_ref(un);
        ll::cpu::swiglu_forward(out_ref.data(), gate.data() + offset, up.data() + offset, n);
        ll::cpu::swiglu_backward(dg_ref.data(), du_ref.data(), dout.data() + offset,
                                 gate.data() + offset, up.data() + offset, n);

        auto d_gate = upload_bf16(gate);
        auto d_up = upload_bf16(up);
        auto d_dout = upload_bf16(dout);
        DeviceBuffer<bf16> d_out(len), d_dg(len), d_du(len);
        d_out.poison();
        d_dg.poison();
        d_du.poison();
        ll::cuda::swiglu_forward(d_out.get() + offset, d_gate.get() + offset, d_up.get() + offset,
                                 n, 0);
        ll::cuda::swiglu_backward(d_dg.get() + offset, d_du.get() + offset, d_dout.get() + offset,
                                  d_gate.get() + offset, d_up.get() + offset, n, 0);
        device_sync();
        check_close(download_bf16(d_out.get() + offset, size_t(n)), to_double(out_ref), 1e-5,
                    kBf16Rtol, 1e-2);
        check_close(download_bf16(d_dg.get() + offset, size_t(n)), to_double(dg_ref), 1e-5,
                    kBf16Rtol, 1e-2);
        check_close(download_bf16(d_du.get() + offset, size_t(n)), to_double(du_ref), 1e-5,
                    kBf16Rtol, 1e-2);

        // In place: backward with dgate = gate and dup = up, then forward with out = gate.
        {
          auto g2 = upload_bf16(gate);
          auto u2 = upload_bf16(up);
          ll::cuda::swiglu_backward(g2.get() + offset, u2.get() + offset, d_dout.get() + offset,
                                    g2.get() + offset, u2.get() + offset, n, 0);
          device_sync();
          check_close(download_bf16(g2.get() + offset, size_t(n)), to_double(dg_ref), 1e-5,
                      kBf16Rtol, 1e-2);
          check_close(download_bf16(u2.get() + offset, size_t(n)), to_double(du_ref), 1e-5,
                      kBf16Rtol, 1e-2);
          auto g3 = upload_bf16(gate);
          ll::cuda::swiglu_forward(g3.get() + offset, g3.get() + offset, d_up.get() + offset, n, 0);
          device_sync();
          check_close(download_bf16(g3.get() + offset, size_t(n)), to_double(out_ref), 1e-5,
                      kBf16Rtol, 1e-2);
        }
      }
    }
  }
  ll::cuda::swiglu_forward(nullptr, nullptr, nullptr, 0, 0);
  ll::cuda::swiglu_backward(nullptr, nullptr, nullptr, nullptr, nullptr, 0, 0);
  CHECK_THROWS_AS(ll::cuda::swiglu_forward(nullptr, nullptr, nullptr, -1, 0), ll::Error);
#endif
}
