// The SwiGLU kernels and launch sequences (kernels/cuda/swiglu_kernels.cuh) run in the SIMT
// emulator against the CPU reference (kernels/cpu/swiglu.h) with the GPU test's table
// (swiglu_test_cases.h): the 16-byte path (aligned pointers) and the scalar path (offset by one
// element), ragged sizes, several blocks, in place (out = gate; dgate = gate and dup = up), exp(-g)
// overflowing, and the grid-stride loops (the sequences on a grid capped below the work; their
// own grids cover it at any testable size). Outputs start as NaN bytes, so an unwritten
// element fails; every case also runs with the fibers in reverse order and must give the same
// bytes.
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
#include "kernels/cuda/swiglu_kernels.cuh"
#include "tests/cuda_emu/emu_launcher.h"
#include "tests/cuda_emu/host_buffer.h"
#include "tests/kernels/cuda/emu/emu_test_util.h"
#include "tests/kernels/cuda/gpu_test_util.h"
#include "tests/kernels/kernel_test_util.h"
#include "tests/kernels/swiglu_test_cases.h"

namespace {

namespace emu = ll::cuda::emu;
namespace dev = ll::cuda::swiglu_dev;
using bf16 = __nv_bfloat16;
using ll::test::emu_util::bf16_host_buffer;
using ll::test::emu_util::read_from;

// A host stand-in for an output: n poisoned bf16 elements.
emu::HostBuffer poisoned_bf16(size_t n) { return emu::HostBuffer(n * sizeof(uint16_t), true); }

using Inputs = ll::test::swiglu_cases::Data;

// What the kernels wrote, raw bf16 [n] each.
struct Outputs {
  std::vector<uint16_t> out, dgate, dup;             // separate outputs
  std::vector<uint16_t> out_inplace;                 // forward with out = gate
  std::vector<uint16_t> dgate_inplace, dup_inplace;  // backward with dgate = gate, dup = up
  std::vector<emu::KernelRun> runs;                  // the four launches
};

Outputs run_sequences(const Inputs& in, unsigned max_blocks) {
  const size_t off = size_t(in.offset), n = size_t(in.n);
  Outputs o;
  const emu::EmuLauncher launch{&o.runs, max_blocks};
  const auto at = [off](emu::HostBuffer& b) { return b.as<bf16>() + off; };
  auto gate = bf16_host_buffer(in.gate), up = bf16_host_buffer(in.up),
       dout = bf16_host_buffer(in.dout);
  auto out = poisoned_bf16(off + n), dg = poisoned_bf16(off + n), du = poisoned_bf16(off + n);
  dev::run_swiglu_forward(launch, at(out), at(gate), at(up), in.n);
  dev::run_swiglu_backward(launch, at(dg), at(du), at(dout), at(gate), at(up), in.n);
  o.out = read_from<uint16_t>(out, off, n);
  o.dgate = read_from<uint16_t>(dg, off, n);
  o.dup = read_from<uint16_t>(du, off, n);
  auto g2 = bf16_host_buffer(in.gate), u2 = bf16_host_buffer(in.up);
  dev::run_swiglu_backward(launch, at(g2), at(u2), at(dout), at(g2), at(u2), in.n);
  o.dgate_inplace = read_from<uint16_t>(g2, off, n);
  o.dup_inplace = read_from<uint16_t>(u2, off, n);
  auto g3 = bf16_host_buffer(in.gate);
  dev::run_swiglu_forward(launch, at(g3), at(g3), at(up), in.n);
  o.out_inplace = read_from<uint16_t>(g3, off, n);
  return o;
}

void check_bf16(const std::vector<uint16_t>& got, const std::vector<float>& ref) {
  ll::test::swiglu_cases::check_output(ll::test::emu_util::from_bf16_bits(got), ref);
}

// Runs the case on grids capped at max_blocks, in both fiber orders, against the reference.
void check_case(const Inputs& in, unsigned max_blocks) {
  const int64_t n = in.n, offset = in.offset;
  const auto [o, rev] =
      ll::test::emu_util::run_both_orders([&] { return run_sequences(in, max_blocks); });
  check_bf16(o.out, in.out_ref);
  check_bf16(o.dgate, in.dg_ref);
  check_bf16(o.dup, in.du_ref);
  check_bf16(o.out_inplace, in.out_ref);
  check_bf16(o.dgate_inplace, in.dg_ref);
  check_bf16(o.dup_inplace, in.du_ref);

  // One launch per call, 256 threads a block, blocks covering the pieces (8 elements on the
  // 16-byte path, 1 on the scalar one) unless capped.
  const int64_t pieces = offset == 0 ? (n + 7) / 8 : n;
  const int64_t blocks =
      std::min<int64_t>((pieces + dev::kThreads - 1) / dev::kThreads, int64_t(max_blocks));
  REQUIRE(o.runs.size() == 4);
  for (const emu::KernelRun& r : o.runs) CHECK(r.stats.blocks == blocks);
  CHECK(o.runs[0].kernel == "swiglu_forward_kernel");
  CHECK(o.runs[1].kernel == "swiglu_backward_kernel");

  CHECK(rev.out == o.out);
  CHECK(rev.dgate == o.dgate);
  CHECK(rev.dup == o.dup);
  CHECK(rev.out_inplace == o.out_inplace);
  CHECK(rev.dgate_inplace == o.dgate_inplace);
  CHECK(rev.dup_inplace == o.dup_inplace);
}

}  // namespace

TEST_CASE("emulated swiglu kernels match the CPU reference on both paths and in place") {
  for (const uint64_t seed : ll::test::test_seeds()) {
    std::mt19937_64 rng(seed);
    for (const int64_t n : ll::test::swiglu_cases::kSizes) {
      for (const int64_t offset : ll::test::swiglu_cases::kOffsets) {
        INFO("seed " << seed << " n " << n << " offset " << offset);
        check_case(ll::test::swiglu_cases::make_data(rng, n, offset), UINT_MAX);
      }
    }
  }
}

TEST_CASE("emulated swiglu kernels stride over more pieces than the grid has threads") {
  std::mt19937_64 rng(ll::test::test_seeds()[1]);
  // 2 blocks = 512 threads: 16-byte path over 1281 pieces (the last one ragged), scalar path
  // over 2000 elements.
  for (const int64_t n : {int64_t(8 * 1280 + 3), int64_t(2000)}) {
    for (const int64_t offset : {0, 1}) {
      INFO("n " << n << " offset " << offset);
      check_case(ll::test::swiglu_cases::make_data(rng, n, offset), 2);
    }
  }
}

#else
TEST_CASE("swiglu kernels in the SIMT emulator") {
  std::printf(
      "SKIP: built without the CUDA toolkit (the emulator compiles CUDA device code "
      "with its headers)\n");
  std::exit(77);
}
#endif
