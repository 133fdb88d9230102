// The SwiGLU kernels and launch sequences (kernels/cuda/swiglu_kernels.cuh) run in the SIMT
// emulator against the CPU reference (kernels/cpu/swiglu.h) with the GPU test's sizes and
// tolerances: the 16-byte path (aligned pointers) and the scalar path (offset by one element),
// ragged sizes, several blocks, in place (out = gate; dgate = gate and dup = up), exp(-g)
// overflowing, and the grid-stride loops (the sequences on a grid capped below the work; their
// own grids cover it at any testable size). Outputs start as NaN bytes, so an unwritten
// element fails; every case also runs with the fibers in reverse order and must give the same
// bytes.
#if defined(LL_HAVE_CUDA_EMU)
#include "kernels/cuda/emu/cuda_prelude.h"
#endif

#include <doctest/doctest.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <utility>
#include <vector>

#if defined(LL_HAVE_CUDA_EMU)
#include "kernels/cpu/swiglu.h"
#include "kernels/cuda/emu/emu_launcher.h"
#include "kernels/cuda/emu/host_buffer.h"
#include "kernels/cuda/swiglu_kernels.cuh"
#include "tests/kernels/cuda/gpu_test_util.h"
#include "tests/kernels/kernel_test_util.h"

namespace {

namespace emu = ll::cuda::emu;
namespace dev = ll::cuda::swiglu_dev;
using bf16 = __nv_bfloat16;
using ll::test::bf16_bits_to_f32;
using ll::test::f32_to_bf16_bits;

// The emulator's launcher with every grid capped at max_blocks blocks, so that the kernels'
// grid-stride loops take several turns.
struct CappedGridLauncher {
  unsigned max_blocks;
  std::vector<emu::KernelRun>* runs;

  template <typename... P, typename... A>
  void operator()(const char* name, void (*kernel)(P...), dim3 grid, dim3 block, size_t smem,
                  A&&... args) const {
    grid.x = std::min(grid.x, max_blocks);
    emu::EmuLauncher{runs}(name, kernel, grid, block, smem, std::forward<A>(args)...);
  }
};

// Host stand-ins for device buffers: the bf16 values of v (rounded), or n poisoned elements.
emu::HostBuffer bf16_buffer(const std::vector<float>& v) {
  std::vector<uint16_t> bits(v.size());  // [n] bf16
  for (size_t i = 0; i < v.size(); ++i) bits[i] = f32_to_bf16_bits(v[i]);
  return emu::HostBuffer(bits);
}
emu::HostBuffer poisoned_bf16(size_t n) { return emu::HostBuffer(n * sizeof(uint16_t), true); }

// count raw bf16 values of b from element `offset` on.
std::vector<uint16_t> raw_bf16(const emu::HostBuffer& b, size_t offset, size_t count) {
  const auto all = b.read<uint16_t>(offset + count);
  return std::vector<uint16_t>(all.begin() + long(offset), all.end());
}

// Inputs of one case (bf16-rounded): n elements used from `offset` on.
struct Inputs {
  int64_t n, offset;
  std::vector<float> gate, up, dout;  // [offset + n]
};

// What the kernels wrote, raw bf16 [n] each.
struct Outputs {
  std::vector<uint16_t> out, dgate, dup;             // separate outputs
  std::vector<uint16_t> out_inplace;                 // forward with out = gate
  std::vector<uint16_t> dgate_inplace, dup_inplace;  // backward with dgate = gate, dup = up
  std::vector<emu::KernelRun> runs;                  // the four launches
};

Outputs run_sequences(const Inputs& in, unsigned max_blocks, emu::Order order) {
  emu::set_order(order);
  const size_t off = size_t(in.offset), n = size_t(in.n);
  Outputs o;
  const CappedGridLauncher launch{max_blocks, &o.runs};
  const auto at = [off](emu::HostBuffer& b) { return b.as<bf16>() + off; };
  auto gate = bf16_buffer(in.gate), up = bf16_buffer(in.up), dout = bf16_buffer(in.dout);
  auto out = poisoned_bf16(off + n), dg = poisoned_bf16(off + n), du = poisoned_bf16(off + n);
  dev::run_swiglu_forward(launch, at(out), at(gate), at(up), in.n);
  dev::run_swiglu_backward(launch, at(dg), at(du), at(dout), at(gate), at(up), in.n);
  o.out = raw_bf16(out, off, n);
  o.dgate = raw_bf16(dg, off, n);
  o.dup = raw_bf16(du, off, n);
  auto g2 = bf16_buffer(in.gate), u2 = bf16_buffer(in.up);
  dev::run_swiglu_backward(launch, at(g2), at(u2), at(dout), at(g2), at(u2), in.n);
  o.dgate_inplace = raw_bf16(g2, off, n);
  o.dup_inplace = raw_bf16(u2, off, n);
  auto g3 = bf16_buffer(in.gate);
  dev::run_swiglu_forward(launch, at(g3), at(g3), at(up), in.n);
  o.out_inplace = raw_bf16(g3, off, n);
  emu::set_order(emu::Order::Forward);
  return o;
}

void check_bf16(const std::vector<uint16_t>& got, const std::vector<float>& ref) {
  std::vector<float> v(got.size());
  for (size_t i = 0; i < got.size(); ++i) v[i] = bf16_bits_to_f32(got[i]);
  ll::test::check_close(v, ll::test::to_double(ref), 1e-5, ll::test::kBf16Rtol, 1e-2);
}

// Random inputs for n elements at `offset`, with exp(-g) overflowing at the first two.
Inputs random_inputs(std::mt19937_64& rng, int64_t n, int64_t offset) {
  using ll::test::random_uniform;
  using ll::test::round_bf16;
  const size_t len = size_t(n + offset);
  Inputs in{n, offset, round_bf16(random_uniform(rng, len, -6.0f, 6.0f)),
            round_bf16(random_uniform(rng, len, -2.0f, 2.0f)),
            round_bf16(random_uniform(rng, len, -1.0f, 1.0f))};
  in.gate[size_t(offset)] = -100.0f;  // silu = -0, dgate = 0
  if (n > 1) in.gate[size_t(offset) + 1] = 100.0f;
  return in;
}

// Runs the case on grids capped at max_blocks, in both fiber orders, against the reference.
void check_case(const Inputs& in, unsigned max_blocks) {
  const int64_t n = in.n, offset = in.offset;
  const size_t un = size_t(n);
  std::vector<float> out_ref(un), dg_ref(un), du_ref(un);
  ll::cpu::swiglu_forward(out_ref.data(), in.gate.data() + offset, in.up.data() + offset, n);
  ll::cpu::swiglu_backward(dg_ref.data(), du_ref.data(), in.dout.data() + offset,
                           in.gate.data() + offset, in.up.data() + offset, n);

  const Outputs o = run_sequences(in, max_blocks, emu::Order::Forward);
  check_bf16(o.out, out_ref);
  check_bf16(o.dgate, dg_ref);
  check_bf16(o.dup, du_ref);
  check_bf16(o.out_inplace, out_ref);
  check_bf16(o.dgate_inplace, dg_ref);
  check_bf16(o.dup_inplace, du_ref);

  // One launch per call, 256 threads a block, blocks covering the pieces (8 elements on the
  // 16-byte path, 1 on the scalar one) unless capped.
  const int64_t pieces = offset == 0 ? (n + 7) / 8 : n;
  const int64_t blocks =
      std::min<int64_t>((pieces + dev::kThreads - 1) / dev::kThreads, int64_t(max_blocks));
  REQUIRE(o.runs.size() == 4);
  for (const emu::KernelRun& r : o.runs) CHECK(r.stats.blocks == blocks);
  CHECK(o.runs[0].kernel == "swiglu_forward_kernel");
  CHECK(o.runs[1].kernel == "swiglu_backward_kernel");

  const Outputs rev = run_sequences(in, max_blocks, emu::Order::Reverse);
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
    for (const int64_t n : {1, 7, 8, 1000, 4099, 65539}) {
      for (const int64_t offset : {0, 1}) {  // offset 1: not 16-byte aligned, scalar path
        INFO("seed " << seed << " n " << n << " offset " << offset);
        check_case(random_inputs(rng, n, offset), UINT_MAX);
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
      check_case(random_inputs(rng, n, offset), 2);
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
