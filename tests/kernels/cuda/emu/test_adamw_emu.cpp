// The CUDA AdamW kernel (kernels/cuda/adamw_kernels.cuh) runs in the SIMT emulator against
// ll::adamw_update (the CPU reference), with the GPU test's tolerances, over three steps with
// and without weight decay and gradient scaling, on a machine without a GPU: one element, a
// partial block, several blocks with a ragged last one; the bf16 parameter copy is
// bf16(master) bit for bit, and a null parameter pointer skips it. The bf16 copy starts
// poisoned (NaN); each step runs again with the fibers in reverse order and must give the same
// bytes. Not reachable here: the grid-stride loop's second pass (n > 2^28 elements).
#if defined(LL_HAVE_SIMT_EMULATOR)
#include "tests/cuda_emu/cuda_prelude.h"
#endif

#include <doctest/doctest.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#if defined(LL_HAVE_SIMT_EMULATOR)
#include "kernels/cuda/adamw_kernels.cuh"
#include "optim/adamw.h"
#include "tests/cuda_emu/emu_launcher.h"
#include "tests/kernels/adamw_test_cases.h"
#include "tests/kernels/cuda/emu/emu_test_util.h"
#include "tests/kernels/cuda/gpu_test_util.h"
#include "tests/kernels/kernel_test_util.h"

namespace {

namespace emu = ll::cuda::emu;
namespace dev = ll::cuda::adamw_dev;
using ll::test::emu_util::run_both_orders;

// The optimizer state of n parameters (the kernel accesses elements one by one).
struct State {
  std::vector<float> master, m, v;  // [n] each
  std::vector<uint16_t> param;      // [n] bf16 bits, empty: no copy written

  bool operator==(const State& o) const {
    return ll::test::same_bytes(master, o.master) && ll::test::same_bytes(m, o.m) &&
           ll::test::same_bytes(v, o.v) && param == o.param;
  }
};

// One emulated adamw step from `before`; with_param: the bf16 copy into a poisoned buffer.
State emulated_step(const State& before, const std::vector<float>& grad, const ll::AdamWStep& step,
                    bool with_param, std::vector<emu::KernelRun>* runs) {
  State s = before;
  const int64_t n = int64_t(s.master.size());
  s.param.assign(with_param ? size_t(n) : 0, uint16_t(0xFFFF));
  dev::run_adamw_step(emu::EmuLauncher{runs}, s.master.data(), grad.data(), s.m.data(), s.v.data(),
                      with_param ? reinterpret_cast<__nv_bfloat16*>(s.param.data()) : nullptr, n,
                      step);
  return s;
}

}  // namespace

TEST_CASE("emulated adamw_step matches adamw_update") {
  using namespace ll::test;
  // The GPU test's table (adamw_test_cases.h), without its sizes marked slow here.
  namespace cases = adamw_cases;
  const auto seeds = test_seeds();
  size_t index = 0;
  for (const cases::Size size : cases::kSizes) {
    if (size.emu_slow) continue;
    const int64_t n = size.n;
    for (const double wd : cases::kWeightDecays) {
      for (const float grad_scale : cases::kGradScales) {
        const uint64_t seed = emu_util::case_seed(seeds, index);
        ++index;
        INFO("seed " << seed << " n " << n << " wd " << wd << " grad_scale " << grad_scale);
        std::mt19937_64 rng(seed);
        const size_t un = size_t(n);
        std::vector<float> master = cases::initial_master(rng, un), m(un, 0.0f), v(un, 0.0f);
        State state{master, m, v, {}};
        for (int64_t t = 1; t <= 4; ++t) {
          INFO("step " << t);
          const auto grad = cases::random_grad(rng, un);  // [n]
          const ll::AdamWStep step = cases::make_step(t, wd, grad_scale);
          ll::adamw_update(master.data(), grad.data(), m.data(), v.data(), n, step);
          const bool with_param = t < 4;  // the last step skips the bf16 copy
          std::vector<emu::KernelRun> runs;
          const auto [got, rev] =
              run_both_orders([&] { return emulated_step(state, grad, step, with_param, &runs); });
          cases::check_master(got.master, master);
          cases::check_m(got.m, m);
          cases::check_v(got.v, v);
          cases::check_param(emu_util::from_bf16_bits(got.param), got.master);
          CHECK(got.param.size() == (with_param ? un : 0));
          CHECK_MESSAGE(rev == got, "the step differs with the reverse thread order");
          REQUIRE(runs.size() == 2);
          CHECK(runs[0].kernel == "adamw_kernel");
          CHECK(runs[0].stats.blocks == (n + dev::kThreads - 1) / dev::kThreads);
          state = got;
        }
      }
    }
  }
}

#else
TEST_CASE("emulated adamw_step") {
  std::printf(
      "SKIP: built without the CUDA toolkit (the emulator compiles CUDA device code "
      "with its headers)\n");
  std::exit(77);
}
#endif
