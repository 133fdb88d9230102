// The tensor-core attention kernels (forward and the three backward kernels) run in the SIMT
// emulator (tests/cuda_emu) against the fp32 CPU reference (kernels/cpu/attention.h), on a
// machine without a GPU: dense, S2 and S2Roll (both halves of heads), MHA and GQA, head dims
// 64 and 128, N around the tile sizes (64-row key tiles, 64- or 128-row query tiles), G
// dividing N, not dividing it and larger than N. Outputs start poisoned (NaN), so an unwritten
// element fails. Each case also runs with the fibers scheduled in reverse order and must give
// the same bytes (a race between warps would show), and the emulator's own checks (shared
// memory bounds, cp.async read before its wait, reads without a barrier after another
// thread's copy, copies over data another warp read since the last barrier, global reads
// outside the tensors) turn any violation into a failure.
// The full sweep of the GPU tests' shapes is test_attention_tc_sweep_emu_slow.cpp.
// What this does not prove: the inline-PTX wrappers (kernels/cuda/tc_ptx.cuh), replaced here
// by the emulator's implementation of each instruction, and anything about speed.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "kernels/attention_pattern.h"
#include "tests/kernels/kernel_test_util.h"

#if defined(LL_HAVE_SIMT_EMULATOR)
#include "tests/kernels/cuda/emu/attention_tc_emu_case.h"
#endif

TEST_CASE("emulated tensor-core attention forward and backward match the CPU reference") {
#if defined(LL_HAVE_SIMT_EMULATOR)
  using ll::test::emu_case::Case;
  const auto seeds = ll::test::test_seeds();
  // MHA and GQA 2 and 4; N: one row, ragged in every tile, one row past a 64-row tile.
  std::vector<Case> cases;
  for (int64_t hd : {64, 128}) {
    cases.push_back({ll::AttnMode::Dense, 1, 2, 2, hd, 0});
    cases.push_back({ll::AttnMode::Dense, 130, 2, 1, hd, 0});
    cases.push_back({ll::AttnMode::S2, 200, 4, 2, hd, 72});      // G does not divide N
    cases.push_back({ll::AttnMode::S2Roll, 200, 4, 2, hd, 72});  // wrap-around segments
    cases.push_back({ll::AttnMode::S2, 64, 2, 2, hd, 16});       // G below the tile size
    cases.push_back({ll::AttnMode::S2, 65, 4, 1, hd, 68});       // G > N
  }
  int index = 0;
  for (const Case& c : cases) {
    ll::test::emu_case::run_case(c, ll::test::emu_util::case_seed(seeds, size_t(index)), true);
    ++index;
  }
#else
  std::printf(
      "SKIP: built without the CUDA toolkit (the emulator compiles the CUDA kernels' "
      "source with its headers)\n");
  std::exit(77);
#endif
}
