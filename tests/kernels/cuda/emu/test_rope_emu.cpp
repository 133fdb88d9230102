// The rope kernel and launch sequences (kernels/cuda/rope_kernels.cuh) run in the SIMT emulator
// against the CPU reference (kernels/cpu/rope.h) with the GPU test's table (rope_test_cases.h):
// forward and backward in place, long positions and non-power-of-two scales (where one fp32 ulp
// of the angle would show), every RoPE scaling type (yarn's attention factor included), head dims
// from 2 to 512 (more pairs per token than threads, and at 512 more pairs per head than threads),
// and the grid-stride over tokens (the sequence on a grid capped below the token count, so each
// block reuses its shared cos/sin for several tokens). Every case also runs with the fibers in
// reverse order and must give the same bytes. Not covered: the device's own sincospi (the
// emulator's is computed in double on the host, not the device's implementation).
#if defined(LL_HAVE_SIMT_EMULATOR)
#include "tests/cuda_emu/cuda_prelude.h"
#endif

#include <doctest/doctest.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#if defined(LL_HAVE_SIMT_EMULATOR)
#include "kernels/cuda/rope_kernels.cuh"
#include "tests/cuda_emu/emu_launcher.h"
#include "tests/cuda_emu/host_buffer.h"
#include "tests/kernels/cuda/emu/emu_test_util.h"
#include "tests/kernels/cuda/gpu_test_util.h"
#include "tests/kernels/kernel_test_util.h"
#include "tests/kernels/rope_test_cases.h"

namespace {

namespace emu = ll::cuda::emu;
namespace dev = ll::cuda::rope_dev;
using bf16 = __nv_bfloat16;
using ll::test::emu_util::bf16_host_buffer;

using ll::test::rope_cases::Case;
using ll::test::rope_cases::kCases;

// x [n, heads, hd] rotated forward and backward by the launch sequences on grids capped at
// max_blocks; raw bf16 results.
struct Outputs {
  std::vector<uint16_t> fwd, bwd;    // [n, heads, hd] each
  std::vector<emu::KernelRun> runs;  // the two launches
};

Outputs run_sequences(const Case& c, const std::vector<float>& x, unsigned max_blocks) {
  Outputs o;
  const emu::EmuLauncher launch{&o.runs, max_blocks};
  auto f = bf16_host_buffer(x), b = bf16_host_buffer(x);
  const ll::RopeFrequencies freqs = ll::test::rope_cases::freqs_of(c);
  dev::run_rope_forward(launch, f.as<bf16>(), c.n, c.heads, c.hd, c.offset, freqs);
  dev::run_rope_backward(launch, b.as<bf16>(), c.n, c.heads, c.hd, c.offset, freqs);
  o.fwd = f.read<uint16_t>(x.size());
  o.bwd = b.read<uint16_t>(x.size());
  return o;
}

void check_case(const Case& c, std::mt19937_64& rng, unsigned max_blocks) {
  INFO("[" << c.n << ", " << c.heads << ", " << c.hd << "] offset " << c.offset << " rope "
           << ll::describe_rope_scaling(c.rope) << " theta " << c.theta << " max blocks "
           << max_blocks);
  const ll::test::rope_cases::Data data = ll::test::rope_cases::make_data(c, rng);
  const auto [o, rev] =
      ll::test::emu_util::run_both_orders([&] { return run_sequences(c, data.x, max_blocks); });
  ll::test::rope_cases::check_output(ll::test::emu_util::from_bf16_bits(o.fwd), data.fwd);
  ll::test::rope_cases::check_output(ll::test::emu_util::from_bf16_bits(o.bwd), data.bwd);
  // One launch each, one block per token unless capped.
  REQUIRE(o.runs.size() == 2);
  for (const emu::KernelRun& r : o.runs) {
    CHECK(r.kernel == "rope_kernel");
    CHECK(r.stats.blocks == std::min<int64_t>(c.n, max_blocks));
  }
  CHECK(rev.fwd == o.fwd);
  CHECK(rev.bwd == o.bwd);
}

}  // namespace

TEST_CASE("emulated rope kernel matches the CPU reference forward and backward") {
  for (const uint64_t seed : ll::test::test_seeds()) {
    INFO("seed " << seed);
    std::mt19937_64 rng(seed);
    for (const Case& c : kCases) check_case(c, rng, UINT_MAX);
  }
}

TEST_CASE("emulated rope kernel strides over more tokens than blocks") {
  std::mt19937_64 rng(ll::test::test_seeds()[1]);
  check_case({7, 3, 128, 4000, ll::linear_rope_scaling(4.0), 10000.0}, rng, 2);
  check_case({10, 2, 512, 123, {}, 10000.0}, rng, 3);
  check_case({300, 1, 10, 7, {}, 10000.0}, rng, 7);
  check_case({9, 2, 64, 5000, ll::test::yarn_rope(4.0, 1024), 10000.0}, rng, 4);
}

#else
TEST_CASE("rope kernel in the SIMT emulator") {
  std::printf(
      "SKIP: built without the CUDA toolkit (the emulator compiles CUDA device code "
      "with its headers)\n");
  std::exit(77);
}
#endif
