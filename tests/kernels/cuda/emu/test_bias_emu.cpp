// The CUDA bias kernels (kernels/cuda/bias_kernels.cuh) run in the SIMT emulator, on the GPU
// test's table (bias_test_cases.h) and tolerances, on a machine without a GPU: add_bias with a
// bf16 and an fp32 bias, bitwise against the host, on the 16-byte path (C % 8 == 0, aligned)
// and the element path (odd C, or pointers off the 16-byte alignment), also with the grid
// capped so that the grid-stride loop takes several turns; bias_backward against a long double
// sum, over one and several row chunks (ragged, the 256-chunk cap with empty chunks) and column
// blocks. Outputs and the scratch start poisoned (NaN) where the kernels overwrite them; each
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
#include "kernels/cuda/bias_kernels.cuh"
#include "tests/cuda_emu/emu_launcher.h"
#include "tests/kernels/bias_test_cases.h"
#include "tests/kernels/cuda/emu/emu_test_util.h"
#include "tests/kernels/cuda/gpu_test_util.h"
#include "tests/kernels/kernel_test_util.h"

namespace {

namespace emu = ll::cuda::emu;
namespace dev = ll::cuda::bias_dev;
using bf16 = __nv_bfloat16;

using ll::test::emu_util::case_seed;
using ll::test::emu_util::from_bf16_bits;
using ll::test::emu_util::OffsetBuffer;
using ll::test::emu_util::run_both_orders;
using ll::test::emu_util::to_bf16_bits;

// The GPU test's table (bias_test_cases.h), without its shapes marked slow here.
using ll::test::bias_cases::kShapes;
using ll::test::bias_cases::Shape;
namespace cases = ll::test::bias_cases;

bool vectorized(const Shape& s) { return s.c % 8 == 0 && s.offset == 0; }

// add_bias on out (bf16 bits) with a bias of type B (bf16 bits as uint16_t, or float): the
// result, the bias afterwards and the launches.
struct AddResult {
  std::vector<uint16_t> out;
  std::vector<uint16_t> bias_bf16;
  std::vector<float> bias_f32;
  std::vector<emu::KernelRun> runs;
};
AddResult run_add(const Shape& s, const cases::Forward& f, bool f32_bias, unsigned max_grid_x) {
  AddResult r;
  OffsetBuffer<uint16_t> d_out(to_bf16_bits(f.out), s.offset);
  OffsetBuffer<uint16_t> d_b16(to_bf16_bits(f.bias_bf16), s.offset);
  OffsetBuffer<float> d_b32(f.bias_f32, s.offset);
  const emu::EmuLauncher launch{&r.runs, max_grid_x};
  if (f32_bias) {
    dev::run_add_bias(launch, d_out.as<bf16>(), d_b32.data(), s.m, s.c);
  } else {
    dev::run_add_bias(launch, d_out.as<bf16>(), d_b16.as<const bf16>(), s.m, s.c);
  }
  r.out = d_out.values();
  r.bias_bf16 = d_b16.values();
  r.bias_f32 = d_b32.values();
  return r;
}

}  // namespace

TEST_CASE("emulated add_bias equals the host bitwise, bf16 and fp32 bias") {
  using namespace ll::test;
  const auto seeds = test_seeds();
  for (size_t index = 0; index < std::size(kShapes); ++index) {
    const Shape s = kShapes[index];
    if (s.emu_slow) continue;
    const uint64_t seed = case_seed(seeds, index);
    std::mt19937_64 rng(seed);
    const cases::Forward f = cases::make_forward(s, rng);
    for (const bool f32_bias : {false, true}) {
      // Grid as launched, then capped at 2 blocks (the grid-stride loop's further turns).
      for (const unsigned max_grid_x : {0u, 2u}) {
        INFO("seed " << seed << " shape [" << s.m << ", " << s.c << "] offset " << s.offset
                     << (f32_bias ? " fp32" : " bf16") << " bias, grid cap " << max_grid_x);
        const auto [got, rev] =
            run_both_orders([&] { return run_add(s, f, f32_bias, max_grid_x); });
        const std::vector<float>& want = f32_bias ? f.want_f32 : f.want_bf16;
        CHECK_MESSAGE(same_bytes(from_bf16_bits(got.out), want), "out differs from the host");
        CHECK_MESSAGE(got.bias_bf16 == to_bf16_bits(f.bias_bf16), "bf16 bias changed");
        CHECK_MESSAGE(same_bytes(got.bias_f32, f.bias_f32), "fp32 bias changed");
        CHECK_MESSAGE(rev.out == got.out, "out differs with the reverse thread order");

        const std::string kernel = std::string("add_bias_kernel<") + (f32_bias ? "float" : "bf16") +
                                   (vectorized(s) ? ", 8>" : ", 1>");
        REQUIRE(got.runs.size() == 1);
        CHECK(got.runs[0].kernel == kernel);
        const int64_t pieces = s.m * s.c / (vectorized(s) ? 8 : 1);
        const int64_t blocks = (pieces + dev::kThreads - 1) / dev::kThreads;
        CHECK(got.runs[0].stats.blocks == (max_grid_x != 0 && blocks > 2 ? 2 : blocks));
      }
    }
  }
}

TEST_CASE("emulated bias_backward matches the long double sum and is deterministic") {
  using namespace ll::test;
  const auto seeds = test_seeds();
  for (size_t index = 0; index < std::size(kShapes); ++index) {
    const Shape s = kShapes[index];
    if (s.emu_slow) continue;
    const uint64_t seed = case_seed(seeds, index) + 1;
    INFO("seed " << seed << " shape [" << s.m << ", " << s.c << "] offset " << s.offset);
    std::mt19937_64 rng(seed);
    const cases::Backward b = cases::make_backward(s, rng);
    const dev::SumChunks chunks = dev::sum_chunks(s.m);

    struct Result {
      std::vector<float> dbias;
      std::vector<uint16_t> dout;
      std::vector<emu::KernelRun> runs;
    };
    const auto [got, rev] = run_both_orders([&] {
      Result r;
      OffsetBuffer<uint16_t> d_g(to_bf16_bits(b.dout), s.offset);
      OffsetBuffer<float> d_db(b.dbias0, s.offset);
      OffsetBuffer<double> partial(size_t(chunks.n_chunks * s.c));  // [n_chunks, C], poisoned
      dev::run_bias_backward(emu::EmuLauncher{&r.runs}, d_db.data(), partial.data(),
                             d_g.as<const bf16>(), s.m, s.c);
      r.dbias = d_db.values();
      r.dout = d_g.values();
      return r;
    });
    cases::check_dbias(s, got.dbias, b);
    CHECK_MESSAGE(got.dout == to_bf16_bits(b.dout), "dout changed");
    CHECK_MESSAGE(same_bytes(rev.dbias, got.dbias), "dbias differs with the reverse thread order");

    const int64_t col_blocks = (s.c + dev::kSumThreads - 1) / dev::kSumThreads;
    REQUIRE(got.runs.size() == 2);
    CHECK(got.runs[0].kernel == "bias_sum_partial_kernel");
    CHECK(got.runs[0].stats.blocks == col_blocks * chunks.n_chunks);
    CHECK(got.runs[1].kernel == "bias_sum_final_kernel");
    CHECK(got.runs[1].stats.blocks == col_blocks);
  }
  // The chunking: 65 rows in 2 chunks of 33; 130 rows in 3 of 44; 16500 rows at the cap, 65 a
  // chunk (the last two chunks empty); one row, one chunk.
  CHECK(dev::sum_chunks(65).n_chunks == 2);
  CHECK(dev::sum_chunks(65).rows_per_chunk == 33);
  CHECK(dev::sum_chunks(130).n_chunks == 3);
  CHECK(dev::sum_chunks(130).rows_per_chunk == 44);
  CHECK(dev::sum_chunks(16500).n_chunks == 256);
  CHECK(dev::sum_chunks(16500).rows_per_chunk == 65);
  CHECK(dev::sum_chunks(1).n_chunks == 1);
}

#else
TEST_CASE("emulated bias") {
  std::printf(
      "SKIP: built without the CUDA toolkit (the emulator compiles CUDA device code "
      "with its headers)\n");
  std::exit(77);
}
#endif
