// The rope kernel and launch sequences (kernels/cuda/rope_kernels.cuh) run in the SIMT emulator
// against the CPU reference (kernels/cpu/rope.h) with the GPU test's cases and tolerances:
// forward and backward in place, long positions and non-power-of-two scales (where one fp32 ulp
// of the angle would show), head dims from 2 to 512 (more pairs per token than threads, and at
// 512 more pairs per head than threads), and the grid-stride over tokens (the sequence on a grid
// capped below the token count, so each block reuses its shared cos/sin for several tokens).
// Every case also runs with the fibers in reverse order and must give the same bytes.
// Not covered: the device's own sincospi (the emulator's is computed in double on the host,
// not the device's implementation).
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
#include "kernels/cpu/rope.h"
#include "kernels/cuda/rope_kernels.cuh"
#include "tests/cuda_emu/emu_launcher.h"
#include "tests/cuda_emu/host_buffer.h"
#include "tests/kernels/cuda/emu/emu_test_util.h"
#include "tests/kernels/cuda/gpu_test_util.h"
#include "tests/kernels/kernel_test_util.h"

namespace {

namespace emu = ll::cuda::emu;
namespace dev = ll::cuda::rope_dev;
using bf16 = __nv_bfloat16;
using ll::test::emu_util::bf16_host_buffer;

void check_bf16(const std::vector<uint16_t>& got, const std::vector<float>& ref) {
  // fp32 rotation, then one bf16 rounding; atol covers outputs that cancel to ~0.
  ll::test::emu_util::check_bf16_close(got, ref, 1e-5, ll::test::kBf16Rtol, 1e-2);
}

struct Case {
  int64_t n, heads, hd, offset;
  double scale, theta;
};

// The GPU test's cases, and head_dim 512 (the largest the kernel takes).
const Case kCases[] = {
    {1, 1, 2, 0, 1.0, 10000.0},         {3, 2, 6, 5, 1.0, 10000.0},
    {5, 3, 64, 0, 4.0, 10000.0},        {17, 4, 128, 100000, 4.0, 10000.0},
    {33, 2, 128, 99000, 2.5, 500000.0}, {9, 3, 256, 8191, 8.0, 1000000.0},
    {300, 1, 10, 7, 1.0, 10000.0},      {4, 2, 512, 31, 25.0, 10000.0},
};

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
  dev::run_rope_forward(launch, f.as<bf16>(), c.n, c.heads, c.hd, c.offset, c.scale, c.theta);
  dev::run_rope_backward(launch, b.as<bf16>(), c.n, c.heads, c.hd, c.offset, c.scale, c.theta);
  o.fwd = f.read<uint16_t>(x.size());
  o.bwd = b.read<uint16_t>(x.size());
  return o;
}

void check_case(const Case& c, std::mt19937_64& rng, unsigned max_blocks) {
  INFO("[" << c.n << ", " << c.heads << ", " << c.hd << "] offset " << c.offset << " scale "
           << c.scale << " theta " << c.theta << " max blocks " << max_blocks);
  const size_t len = size_t(c.n * c.heads * c.hd);
  const auto x = ll::test::round_bf16(ll::test::random_uniform(rng, len, -2.0f, 2.0f));
  std::vector<float> fwd_ref = x, bwd_ref = x;  // [N, H, hd]
  ll::cpu::rope_forward(fwd_ref.data(), c.n, c.heads, c.hd, c.offset, c.scale, c.theta);
  ll::cpu::rope_backward(bwd_ref.data(), c.n, c.heads, c.hd, c.offset, c.scale, c.theta);

  const auto [o, rev] =
      ll::test::emu_util::run_both_orders([&] { return run_sequences(c, x, max_blocks); });
  check_bf16(o.fwd, fwd_ref);
  check_bf16(o.bwd, bwd_ref);
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
  check_case({7, 3, 128, 4000, 4.0, 10000.0}, rng, 2);
  check_case({10, 2, 512, 123, 1.0, 10000.0}, rng, 3);
  check_case({300, 1, 10, 7, 1.0, 10000.0}, rng, 7);
}

#else
TEST_CASE("rope kernel in the SIMT emulator") {
  std::printf(
      "SKIP: built without the CUDA toolkit (the emulator compiles CUDA device code "
      "with its headers)\n");
  std::exit(77);
}
#endif
