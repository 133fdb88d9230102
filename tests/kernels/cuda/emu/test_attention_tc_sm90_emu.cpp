// The Hopper tensor-core attention kernels (kernels/cuda/attention_tc_forward_sm90_kernels.cuh,
// attention_tc_backward_sm90.cuh: wgmma, bulk tensor copies on mbarriers), forward and
// backward, run in the SIMT emulator against the fp32 CPU reference, in both fiber orders: dense
// and S2 (both halves of heads), MHA and GQA, head dims 64 and 128, N around the 128-row tiles
// (64-row tiles of the other side in the backward), G dividing N, not dividing it, below the tile
// and above N. Outputs start poisoned. The emulator checks wgmma operand reads against copies still
// in flight, bulk copies over operands a wgmma in flight still reads, mbarrier misuse, shared
// bounds and global reads outside the tensors.
// What this does not prove: the inline PTX (kernels/cuda/tc_ptx_sm90.cuh), replaced here by the
// emulator's implementation of each instruction from the PTX ISA (its reading of the
// descriptor and fragment layouts is the emulator's, written independently of this kernel),
// and anything about speed. S2Roll goes to the mma.sync kernel (test_attention_tc_emu).
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

#if defined(LL_HAVE_SIMT_EMULATOR)
namespace {

namespace ec = ll::test::emu_case;
using ec::Case;

// Dense and S2 cases for head dims 64 and 128 (G not dividing N, G > N).
std::vector<Case> base_cases() {
  std::vector<Case> cases;
  for (int64_t hd : {64, 128}) {
    cases.push_back({ll::AttnMode::Dense, 1, 2, 2, hd, 0});
    cases.push_back({ll::AttnMode::Dense, 400, 2, 1, hd, 0});  // GQA, 3-4 key tiles, ragged
    cases.push_back({ll::AttnMode::S2, 200, 4, 2, hd, 72});    // G does not divide N
    cases.push_back({ll::AttnMode::S2, 65, 4, 1, hd, 68});     // G > N
  }
  cases.push_back({ll::AttnMode::S2, 512, 2, 2, 128, 128});  // whole segments skip tiles
  return cases;
}

void run_cases(const std::vector<Case>& cases, size_t first_seed_index, ec::Kernels kernels) {
  const auto seeds = ll::test::test_seeds();
  for (size_t i = 0; i < cases.size(); ++i)
    ec::run_case(cases[i], ll::test::emu_util::case_seed(seeds, first_seed_index + i), true,
                 kernels);
}

}  // namespace
#endif

TEST_CASE("emulated Hopper tensor-core attention forward and backward match the CPU reference") {
#if defined(LL_HAVE_SIMT_EMULATOR)
  std::vector<Case> cases = base_cases();
  for (int64_t hd : {64, 128}) {
    cases.push_back({ll::AttnMode::Dense, 130, 2, 1, hd, 0});
    cases.push_back({ll::AttnMode::S2, 64, 2, 2, hd, 16});  // G below the tile size
  }
  run_cases(cases, 0, ec::Kernels::Hopper);
#else
  std::printf(
      "SKIP: built without the CUDA toolkit (the emulator compiles the CUDA kernels' "
      "source with its headers)\n");
  std::exit(77);
#endif
}

TEST_CASE("emulated Hopper attention backward with atomic dQ matches the CPU reference") {
#if defined(LL_HAVE_SIMT_EMULATOR)
  std::vector<Case> cases = base_cases();
  // Segments of 32 queries: query tiles where one warpgroup's keys see nothing (its dS panel
  // is zeroed for the other's dQ columns at hd 128).
  cases.push_back({ll::AttnMode::S2, 256, 2, 2, 128, 32});
  run_cases(cases, 100, ec::Kernels::HopperAtomicDq);
#else
  std::printf("SKIP: built without the CUDA toolkit\n");
  std::exit(77);
#endif
}
