// The CUDA rmsnorm kernels (kernels/cuda/rmsnorm_kernels.cuh) run in the SIMT emulator against
// the fp32 CPU reference (kernels/cpu/rmsnorm.h), with the GPU test's tolerances, on a machine
// without a GPU: the 16-byte path (D % 8 == 0, aligned) and the scalar path (odd D, or a
// pointer off the 16-byte alignment), rows longer than one pass of the block (the strided
// loop), the 8-warp block reduction, the forward in place (out == x), dweight over one and
// several row chunks (a ragged last chunk and ragged column blocks), and dweight skipped.
// Outputs and the dweight scratch start poisoned (NaN), so an unwritten element fails; each
// case runs again with the fibers in reverse order and must give the same bytes.
#if defined(LL_HAVE_SIMT_EMULATOR)
#include "tests/cuda_emu/cuda_prelude.h"
#endif

#include <doctest/doctest.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#if defined(LL_HAVE_SIMT_EMULATOR)
#include "kernels/cuda/rmsnorm_kernels.cuh"
#include "tests/cuda_emu/emu_launcher.h"
#include "tests/kernels/cuda/emu/emu_test_util.h"
#include "tests/kernels/cuda/gpu_test_util.h"
#include "tests/kernels/kernel_test_util.h"
#include "tests/kernels/rmsnorm_test_cases.h"

namespace {

namespace emu = ll::cuda::emu;
namespace dev = ll::cuda::rmsnorm_dev;
using bf16 = __nv_bfloat16;

using ll::test::emu_util::case_seed;
using ll::test::emu_util::check_bf16_close;
using ll::test::emu_util::OffsetBuffer;
using ll::test::emu_util::run_both_orders;

// bf16 tensors are held as their bits.
OffsetBuffer<uint16_t> bf16_buffer(const std::vector<float>& v, size_t offset = 0) {
  return OffsetBuffer<uint16_t>(ll::test::emu_util::to_bf16_bits(v), offset);
}

// The GPU test's table (rmsnorm_test_cases.h), without its shapes marked slow here.
using ll::test::rmsnorm_cases::kShapes;
using ll::test::rmsnorm_cases::Shape;
namespace cases = ll::test::rmsnorm_cases;

bool vectorized(const Shape& s) { return s.d % 8 == 0 && s.offset == 0; }

}  // namespace

TEST_CASE("emulated rmsnorm_forward matches the CPU reference, also in place") {
  using namespace ll::test;
  const float eps = cases::kEps;
  const auto seeds = test_seeds();
  for (size_t index = 0; index < std::size(kShapes); ++index) {
    const Shape s = kShapes[index];
    if (s.emu_slow) continue;
    const uint64_t seed = case_seed(seeds, index);
    INFO("seed " << seed << " shape [" << s.n << ", " << s.d << "] offset " << s.offset);
    std::mt19937_64 rng(seed);
    const size_t nd = size_t(s.n * s.d);
    const cases::Forward f = cases::make_forward(s, rng);
    const auto &x = f.x, &w = f.w;

    struct Result {
      std::vector<uint16_t> out, in_place;  // [N, D] bf16 bits
      std::vector<float> rstd;              // [N]
      std::vector<emu::KernelRun> runs;
    };
    const auto [got, rev] = run_both_orders([&] {
      Result r;
      auto d_x = bf16_buffer(x, s.offset);
      auto d_w = bf16_buffer(w, s.offset);
      OffsetBuffer<uint16_t> d_out(nd, s.offset);
      OffsetBuffer<float> d_rstd(size_t(s.n));
      dev::run_rmsnorm_forward(emu::EmuLauncher{&r.runs}, d_out.as<bf16>(), d_rstd.data(),
                               d_x.as<bf16>(), d_w.as<bf16>(), s.n, s.d, eps);
      // In place (out aliases x), without rstd.
      dev::run_rmsnorm_forward(emu::EmuLauncher{&r.runs}, d_x.as<bf16>(), nullptr, d_x.as<bf16>(),
                               d_w.as<bf16>(), s.n, s.d, eps);
      r.out = d_out.values();
      r.in_place = d_x.values();
      r.rstd = d_rstd.values();
      return r;
    });
    cases::check_out(emu_util::from_bf16_bits(got.out), f.out_ref);
    cases::check_rstd(got.rstd, f.rstd_ref);
    CHECK_MESSAGE(got.in_place == got.out, "in place differs from out of place");
    CHECK_MESSAGE(rev.out == got.out, "out differs with the reverse thread order");
    CHECK_MESSAGE(rev.in_place == got.in_place, "in place differs with the reverse thread order");
    CHECK_MESSAGE(same_bytes(rev.rstd, got.rstd), "rstd differs with the reverse thread order");

    const std::string kernel =
        vectorized(s) ? "rmsnorm_forward_kernel<8>" : "rmsnorm_forward_kernel<1>";
    REQUIRE(got.runs.size() == 2);
    for (const emu::KernelRun& run : got.runs) {
      CHECK(run.kernel == kernel);
      CHECK(run.stats.blocks == s.n);              // one block per row
      CHECK(run.stats.block_barriers == 2 * s.n);  // the two in block_sum
    }
  }
}

TEST_CASE("emulated rmsnorm_backward matches the CPU reference, with and without dweight") {
  using namespace ll::test;
  const auto seeds = test_seeds();
  for (size_t index = 0; index < std::size(kShapes); ++index) {
    const Shape s = kShapes[index];
    if (s.emu_slow) continue;
    const uint64_t seed = case_seed(seeds, index) + 1;
    INFO("seed " << seed << " shape [" << s.n << ", " << s.d << "] offset " << s.offset);
    std::mt19937_64 rng(seed);
    const cases::Backward in = cases::make_backward(s, rng);
    const auto &x = in.x, &w = in.w, &g = in.g, &dx0 = in.dx0, &dw0 = in.dw0, &rstd = in.rstd;

    const dev::DwChunks chunks = dev::dweight_chunks(s.n);
    struct Result {
      std::vector<uint16_t> dx, dx_frozen;  // [N, D] bf16 bits
      std::vector<float> dw;                // [D]
      std::vector<emu::KernelRun> runs;
    };
    const auto [got, rev] = run_both_orders([&] {
      Result r;
      auto d_x = bf16_buffer(x, s.offset);
      auto d_w = bf16_buffer(w, s.offset);
      auto d_g = bf16_buffer(g, s.offset);
      auto d_rstd = OffsetBuffer<float>(rstd);
      auto d_dx = bf16_buffer(dx0, s.offset);
      auto d_dw = OffsetBuffer<float>(dw0);
      OffsetBuffer<float> partial(size_t(chunks.n_chunks * s.d));  // [n_chunks, D], poisoned
      dev::run_rmsnorm_backward(emu::EmuLauncher{&r.runs}, d_dx.as<bf16>(), d_dw.data(),
                                partial.data(), d_g.as<bf16>(), d_x.as<bf16>(), d_w.as<bf16>(),
                                d_rstd.data(), s.n, s.d);
      // Frozen norm: dweight null, no scratch; dx the same.
      auto d_dx_frozen = bf16_buffer(dx0, s.offset);
      dev::run_rmsnorm_backward(emu::EmuLauncher{&r.runs}, d_dx_frozen.as<bf16>(), nullptr, nullptr,
                                d_g.as<bf16>(), d_x.as<bf16>(), d_w.as<bf16>(), d_rstd.data(), s.n,
                                s.d);
      r.dx = d_dx.values();
      r.dx_frozen = d_dx_frozen.values();
      r.dw = d_dw.values();
      return r;
    });
    cases::check_dx(emu_util::from_bf16_bits(got.dx), in.dx_ref);
    cases::check_dw(s, got.dw, in.dw_ref);
    CHECK_MESSAGE(got.dx_frozen == got.dx, "dx differs without dweight");
    CHECK_MESSAGE(rev.dx == got.dx, "dx differs with the reverse thread order");
    CHECK_MESSAGE(rev.dx_frozen == got.dx_frozen, "dx differs with the reverse thread order");
    CHECK_MESSAGE(same_bytes(rev.dw, got.dw), "dweight differs with the reverse thread order");

    const std::string dx_kernel =
        vectorized(s) ? "rmsnorm_backward_dx_kernel<8>" : "rmsnorm_backward_dx_kernel<1>";
    const int64_t col_blocks = (s.d + dev::kDwThreads - 1) / dev::kDwThreads;
    REQUIRE(got.runs.size() == 4);
    CHECK(got.runs[0].kernel == dx_kernel);
    CHECK(got.runs[0].stats.blocks == s.n);
    CHECK(got.runs[1].kernel == "rmsnorm_dweight_partial_kernel");
    CHECK(got.runs[1].stats.blocks == col_blocks * chunks.n_chunks);
    CHECK(got.runs[2].kernel == "rmsnorm_dweight_final_kernel");
    CHECK(got.runs[2].stats.blocks == col_blocks);
    CHECK(got.runs[3].kernel == dx_kernel);
  }
  // 130 rows: three chunks of 44, 44 and 42 rows.
  CHECK(dev::dweight_chunks(130).n_chunks == 3);
  CHECK(dev::dweight_chunks(130).rows_per_chunk == 44);
}

TEST_CASE("emulated rmsnorm: any one tensor off the 16-byte alignment selects the scalar kernels") {
  using namespace ll::test;
  const float eps = cases::kEps;
  const int64_t n = 2, d = 64;
  std::mt19937_64 rng(test_seeds()[1]);
  const auto x = round_bf16(random_uniform(rng, size_t(n * d), -2.0f, 2.0f));  // [N, D]
  const auto w = round_bf16(random_uniform(rng, size_t(d), 0.5f, 1.5f));       // [D]
  const auto g = round_bf16(random_uniform(rng, size_t(n * d), -1.0f, 1.0f));  // [N, D]
  const size_t nd = size_t(n * d);
  std::vector<float> out_ref(nd), rstd(static_cast<size_t>(n)), dx_ref(nd, 0.0f);
  ll::cpu::rmsnorm_forward(out_ref.data(), rstd.data(), x.data(), w.data(), n, d, eps);
  ll::cpu::rmsnorm_backward(dx_ref.data(), nullptr, g.data(), x.data(), w.data(), rstd.data(), n,
                            d);
  auto d_rstd = OffsetBuffer<float>(rstd);
  for (int k = 0; k < 3; ++k) {  // out, x, weight
    INFO("forward, tensor " << k << " misaligned");
    std::vector<emu::KernelRun> runs;
    OffsetBuffer<uint16_t> d_out(nd, k == 0);
    auto d_x = bf16_buffer(x, k == 1);
    auto d_w = bf16_buffer(w, k == 2);
    dev::run_rmsnorm_forward(emu::EmuLauncher{&runs}, d_out.as<bf16>(), nullptr, d_x.as<bf16>(),
                             d_w.as<bf16>(), n, d, eps);
    REQUIRE(runs.size() == 1);
    CHECK(runs[0].kernel == "rmsnorm_forward_kernel<1>");
    check_bf16_close(d_out.values(), out_ref, 1e-5, kBf16Rtol, 1e-2);
  }
  for (int k = 0; k < 4; ++k) {  // dx, dout, x, weight
    INFO("backward, tensor " << k << " misaligned");
    std::vector<emu::KernelRun> runs;
    auto d_dx = bf16_buffer(std::vector<float>(nd, 0.0f), k == 0);
    auto d_g = bf16_buffer(g, k == 1);
    auto d_x = bf16_buffer(x, k == 2);
    auto d_w = bf16_buffer(w, k == 3);
    dev::run_rmsnorm_backward(emu::EmuLauncher{&runs}, d_dx.as<bf16>(), nullptr, nullptr,
                              d_g.as<bf16>(), d_x.as<bf16>(), d_w.as<bf16>(), d_rstd.data(), n, d);
    REQUIRE(runs.size() == 1);
    CHECK(runs[0].kernel == "rmsnorm_backward_dx_kernel<1>");
    check_bf16_close(d_dx.values(), dx_ref, 1e-4, kBf16Rtol, 1e-2);
  }
}

#else
TEST_CASE("emulated rmsnorm") {
  std::printf(
      "SKIP: built without the CUDA toolkit (the emulator compiles CUDA device code "
      "with its headers)\n");
  std::exit(77);
}
#endif
