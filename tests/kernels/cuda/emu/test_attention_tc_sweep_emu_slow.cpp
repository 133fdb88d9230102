// The emulated tensor-core attention kernels (see test_attention_tc_emu.cpp) over the shapes of
// the GPU tests (test_attention_tc_gpu.cpp, test_attention_tc_backward_gpu.cpp): every mode, N from
// 1 to 1000 around the tile sizes, every S2 group size class (2, 16, 64, N/4, not dividing N,
// larger than N), head dims 64 and 128, MHA and GQA 2 and 4, forward and backward, both fiber
// orders; the mma.sync kernels and the Hopper ones (all but S2Roll, which they leave to
// mma.sync), whose backward runs with both dQ summations. Label slow: too long for the default
// suite.
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

namespace {

#if defined(LL_HAVE_SIMT_EMULATOR)
void sweep(ll::test::emu_case::Kernels kernels) {
  using ll::test::emu_case::Case;
  const bool hopper = kernels != ll::test::emu_case::Kernels::Sm80;
  const auto seeds = ll::test::test_seeds();
  const int64_t heads[][2] = {{4, 4}, {4, 2}, {8, 2}};
  const int64_t ns[] = {1, 7, 63, 64, 65, 100, 257};
  int index = 0;
  for (ll::AttnMode mode : {ll::AttnMode::Dense, ll::AttnMode::S2, ll::AttnMode::S2Roll}) {
    if (hopper && mode == ll::AttnMode::S2Roll) continue;
    for (int64_t n : ns) {
      const std::vector<int64_t> gs =
          mode == ll::AttnMode::Dense ? std::vector<int64_t>{0} : ll::test::group_sizes(n);
      for (int64_t g : gs) {
        for (int64_t hd : {64, 128}) {
          const auto& hh = heads[size_t(index) % 3];
          ll::test::emu_case::run_case(Case{mode, n, hh[0], hh[1], hd, g},
                                       ll::test::emu_util::case_seed(seeds, size_t(index)), true,
                                       kernels);
          ++index;
        }
      }
    }
  }
  // Longer: several key tiles per segment, ragged last segments, a 4-tile dense row block.
  for (int64_t hd : {64, 128}) {
    ll::test::emu_case::run_case(Case{ll::AttnMode::S2, 1000, 4, 2, hd, 250},
                                 seeds.back() + uint64_t(hd), true, kernels);
    if (!hopper)
      ll::test::emu_case::run_case(Case{ll::AttnMode::S2Roll, 1000, 4, 1, hd, 334},
                                   seeds.back() + uint64_t(hd) + 1, true, kernels);
  }
  ll::test::emu_case::run_case(Case{ll::AttnMode::Dense, 600, 2, 1, 128, 0}, seeds.back() + 7, true,
                               kernels);
}
#endif

// The sweep through one kernel family (0 mma.sync, 1 Hopper, 2 Hopper with atomic dQ), or the
// skip exit in a build without the emulator.
void sweep_family(int family) {
#if defined(LL_HAVE_SIMT_EMULATOR)
  using K = ll::test::emu_case::Kernels;
  sweep(family == 0 ? K::Sm80 : family == 1 ? K::Hopper : K::HopperAtomicDq);
#else
  (void)family;
  std::printf(
      "SKIP: built without the CUDA toolkit (the emulator compiles the CUDA kernels' "
      "source with its headers)\n");
  std::exit(77);
#endif
}

}  // namespace

TEST_CASE("emulated tensor-core attention: the GPU tests' sweep of shapes") { sweep_family(0); }

TEST_CASE("emulated Hopper attention kernels: the GPU tests' sweep of shapes") { sweep_family(1); }

TEST_CASE("emulated Hopper attention kernels with atomic dQ: the GPU tests' sweep of shapes") {
  sweep_family(2);
}
