// CUDA add_bias (bf16 and fp32 bias) bitwise against the host (fp32 add, one rounding to bf16)
// and bias_backward against a long double sum (within one fp32 rounding), on the table of
// bias_test_cases.h: C = 1, M = 1, odd C (element path), C % 8 == 0 (16-byte path), several
// column blocks and row chunks, the chunk cap and M = 500k. bias_backward runs twice (its own
// scratch, then a caller's) and must give the same bits; the bias is never written.
#include <doctest/doctest.h>

#include <cstdint>
#include <random>
#include <vector>

#include "tests/gpu_skip.h"
#include "tests/kernels/kernel_test_util.h"

#if defined(LL_HAVE_CUDA)
#include "kernels/cuda/bias.cuh"
#include "tests/kernels/bias_test_cases.h"
#include "tests/kernels/cuda/gpu_test_util.h"

namespace {
using ll::test::bias_cases::kShapes;
using ll::test::bias_cases::Shape;
// The misaligned-pointer shapes are the emulator test's (its host buffers place them); the
// emulated build (make test-emulated) skips the shapes slow in the emulator, saying so.
bool runs_here(const Shape& s) {
  if (s.offset != 0) return false;
  if (s.emu_slow && ll::test::emulated_gpu()) {
    MESSAGE("emulated GPU: skipping shape [" << s.m << ", " << s.c << "] (slow in the emulator)");
    return false;
  }
  return true;
}
}  // namespace
#endif

TEST_CASE("add_bias (cuda) equals the host bitwise, bf16 and fp32 bias") {
  ll::test::require_gpu();
#if defined(LL_HAVE_CUDA)
  using namespace ll::test;
  namespace cases = bias_cases;
  for (const uint64_t seed : test_seeds()) {
    std::mt19937_64 rng(seed);
    for (const Shape s : kShapes) {
      if (!runs_here(s)) continue;
      INFO("seed " << seed << " shape [" << s.m << ", " << s.c << "]");
      const cases::Forward f = cases::make_forward(s, rng);
      auto d_b16 = upload_bf16(f.bias_bf16);
      auto d_b32 = upload(f.bias_f32);
      auto d_out = upload_bf16(f.out);
      ll::cuda::add_bias(d_out.get(), d_b16.get(), s.m, s.c, 0);
      device_sync();
      CHECK_MESSAGE(same_bytes(download_bf16(d_out), f.want_bf16), "bf16 bias: out differs");
      CHECK_MESSAGE(same_bytes(download_bf16(d_b16), f.bias_bf16), "bf16 bias changed");

      auto d_out2 = upload_bf16(f.out);
      ll::cuda::add_bias(d_out2.get(), d_b32.get(), s.m, s.c, 0);
      device_sync();
      CHECK_MESSAGE(same_bytes(download_bf16(d_out2), f.want_f32), "fp32 bias: out differs");
      CHECK_MESSAGE(same_bytes(download(d_b32), f.bias_f32), "fp32 bias changed");
    }
  }
  // Nothing to do: no launch, null pointers allowed; bad shapes and null pointers throw.
  ll::cuda::add_bias(nullptr, static_cast<const bf16*>(nullptr), 0, 8, 0);
  ll::cuda::add_bias(nullptr, static_cast<const float*>(nullptr), 3, 0, 0);
  CHECK_THROWS_AS(ll::cuda::add_bias(nullptr, static_cast<const bf16*>(nullptr), -1, 8, 0),
                  ll::Error);
  CHECK_THROWS_AS(ll::cuda::add_bias(nullptr, static_cast<const float*>(nullptr), 1, 1, 0),
                  ll::Error);
#endif
}

TEST_CASE("bias_backward (cuda) matches the long double sum and is deterministic") {
  ll::test::require_gpu();
#if defined(LL_HAVE_CUDA)
  using namespace ll::test;
  namespace cases = bias_cases;
  for (const uint64_t seed : test_seeds()) {
    std::mt19937_64 rng(seed + 1);
    for (const Shape s : kShapes) {
      if (!runs_here(s)) continue;
      INFO("seed " << seed << " shape [" << s.m << ", " << s.c << "]");
      const cases::Backward b = cases::make_backward(s, rng);
      auto d_g = upload_bf16(b.dout);
      DeviceBuffer<double> scratch(ll::cuda::bias_backward_scratch_bytes(s.m, s.c) /
                                   sizeof(double));
      scratch.poison();
      std::vector<float> first;
      for (int run = 0; run < 2; ++run) {
        auto d_db = upload(b.dbias0);
        // Run 0 lets the launcher allocate its scratch, run 1 passes one (poisoned).
        ll::cuda::bias_backward(d_db.get(), d_g.get(), s.m, s.c, run == 0 ? nullptr : scratch.get(),
                                0);
        device_sync();
        const auto got = download(d_db);
        cases::check_dbias(s, got, b);
        if (run == 0) {
          first = got;
        } else {
          CHECK_MESSAGE(same_bytes(first, got), "dbias differs between two runs");
        }
      }
    }
  }
  CHECK(ll::cuda::bias_backward_scratch_bytes(0, 8) == 0);
  CHECK(ll::cuda::bias_backward_scratch_bytes(130, 3) == 3 * 3 * sizeof(double));
  ll::cuda::bias_backward(nullptr, nullptr, 0, 8, nullptr, 0);
  CHECK_THROWS_AS(ll::cuda::bias_backward(nullptr, nullptr, 1, -1, nullptr, 0), ll::Error);
  CHECK_THROWS_AS(ll::cuda::bias_backward(nullptr, nullptr, 1, 1, nullptr, 0), ll::Error);
#endif
}
