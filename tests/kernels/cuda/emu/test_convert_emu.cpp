// The CUDA conversion and fill kernels (kernels/cuda/convert_kernels.cuh) run in the SIMT
// emulator, bitwise against the host's round-to-nearest-even, on a machine without a GPU: one
// element, a partial block, several blocks with a ragged last one; ties, signed zeros, a
// subnormal, infinities, the largest finite values and NaN. Outputs start poisoned (NaN), so an
// unwritten element fails; each case runs again with the fibers in reverse order and must give
// the same bytes. The emulated conversions are cuda_bf16.h's host implementations, so what this
// proves is the kernels' indexing and coverage; the device rounding is the GPU test's.
// Not reachable here: the grid-stride loop's second pass (n > 2^28 elements).
#if defined(LL_HAVE_SIMT_EMULATOR)
#include "tests/cuda_emu/cuda_prelude.h"
#endif

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <random>
#include <vector>

#if defined(LL_HAVE_SIMT_EMULATOR)
#include "kernels/cuda/convert_kernels.cuh"
#include "tests/cuda_emu/emu_launcher.h"
#include "tests/kernels/convert_test_cases.h"
#include "tests/kernels/cuda/emu/emu_test_util.h"
#include "tests/kernels/cuda/gpu_test_util.h"
#include "tests/kernels/kernel_test_util.h"

namespace {

namespace emu = ll::cuda::emu;
namespace dev = ll::cuda::convert_dev;
using bf16 = __nv_bfloat16;
using ll::test::bf16_bits_to_f32;
using ll::test::same_bytes;
using ll::test::emu_util::as_bf16;
using ll::test::emu_util::case_seed;
using ll::test::emu_util::poisoned_vector;
using ll::test::emu_util::run_both_orders;

struct Result {
  std::vector<uint16_t> to_bf16, fill_bf16;  // [n] bf16 bits
  std::vector<float> to_f32, fill_f32;       // [n]
  std::vector<emu::KernelRun> runs;
};

// The four launch sequences on x (fp32) and b (bf16 bits).
Result run_all(const std::vector<float>& x, const std::vector<uint16_t>& b, float fill_f32,
               float fill_bf16) {
  const int64_t n = int64_t(x.size());
  Result r;
  const emu::EmuLauncher launch{&r.runs};
  r.to_bf16 = poisoned_vector<uint16_t>(x.size());
  dev::run_convert_f32_to_bf16(launch, as_bf16(r.to_bf16.data()), x.data(), n);
  r.to_f32 = poisoned_vector<float>(x.size());
  dev::run_convert_bf16_to_f32(launch, r.to_f32.data(), as_bf16(b.data()), n);
  r.fill_f32 = poisoned_vector<float>(x.size());
  dev::run_fill_f32(launch, r.fill_f32.data(), fill_f32, n);
  r.fill_bf16 = poisoned_vector<uint16_t>(x.size());
  dev::run_fill_bf16(launch, as_bf16(r.fill_bf16.data()), fill_bf16, n);
  return r;
}

}  // namespace

TEST_CASE("emulated convert and fill are exact") {
  // The GPU test's table (convert_test_cases.h), without its sizes marked slow here.
  namespace cases = ll::test::convert_cases;
  const auto seeds = ll::test::test_seeds();
  size_t index = 0;
  for (const cases::Size size : cases::kSizes) {
    if (size.emu_slow) continue;
    const int64_t n = size.n;
    const uint64_t seed = case_seed(seeds, index);
    ++index;
    INFO("seed " << seed << " n " << n);
    std::mt19937_64 rng(seed);
    const cases::Data in = cases::make_data(rng, n);
    const auto [got, rev] =
        run_both_orders([&] { return run_all(in.x, in.b, cases::kFillF32, cases::kFillBf16); });

    cases::check_to_bf16(got.to_bf16, in);
    cases::check_to_f32(got.to_f32, in);
    cases::check_fill_f32(got.fill_f32, n);
    cases::check_fill_bf16(got.fill_bf16, n);
    const bool same_in_reverse = rev.to_bf16 == got.to_bf16 && rev.fill_bf16 == got.fill_bf16 &&
                                 same_bytes(rev.to_f32, got.to_f32) &&
                                 same_bytes(rev.fill_f32, got.fill_f32);
    CHECK_MESSAGE(same_in_reverse, "the outputs differ with the reverse thread order");

    const int64_t blocks = (n + dev::kThreads - 1) / dev::kThreads;
    const char* kernels[] = {"f32_to_bf16_kernel", "bf16_to_f32_kernel", "fill_kernel<float>",
                             "fill_kernel<bf16>"};
    REQUIRE(got.runs.size() == 4);
    for (size_t k = 0; k < 4; ++k) {
      CHECK(got.runs[k].kernel == kernels[k]);
      CHECK(got.runs[k].stats.blocks == blocks);
    }
  }

  // NaN stays NaN, of either sign.
  const std::vector<float> nan = {std::numeric_limits<float>::quiet_NaN(),
                                  -std::numeric_limits<float>::quiet_NaN()};
  std::vector<uint16_t> out(2, 0);  // zeros: a NaN there was written
  dev::run_convert_f32_to_bf16(emu::EmuLauncher{}, as_bf16(out.data()), nan.data(), 2);
  CHECK(std::isnan(bf16_bits_to_f32(out[0])));
  CHECK(std::isnan(bf16_bits_to_f32(out[1])));
}

#else
TEST_CASE("emulated convert and fill") {
  std::printf(
      "SKIP: built without the CUDA toolkit (the emulator compiles CUDA device code "
      "with its headers)\n");
  std::exit(77);
}
#endif
