// The embedding kernels and launch sequences (kernels/cuda/embedding_kernels.cuh) run in the
// SIMT emulator against the CPU reference (kernels/cpu/embedding.h), bitwise as in the GPU test
// (a bf16 copy; fp32 additions in position order), on the GPU test's shapes: the 16-byte path
// (dim % 8 == 0, aligned) and the scalar path (odd dims, or an output off the 16-byte
// alignment), rows longer than a block's pass, several blocks, backward over several token
// tiles with repeated ids. Out-of-range ids: the forward zeroes their rows, the backward skips
// them, both raise the flag, and the id check finds the first bad position (over several
// blocks) and reports it with the message the GPU test expects. Grid-stride loops run on grids
// capped below the work. Outputs start as NaN bytes; every case also runs with the fibers in
// reverse order and must give the same bytes.
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
#include <string>
#include <vector>

#if defined(LL_HAVE_SIMT_EMULATOR)
#include "kernels/cuda/embedding_kernels.cuh"
#include "tests/cuda_emu/emu_launcher.h"
#include "tests/cuda_emu/host_buffer.h"
#include "tests/error_text.h"
#include "tests/kernels/cuda/emu/emu_test_util.h"
#include "tests/kernels/cuda/gpu_test_util.h"
#include "tests/kernels/embedding_test_cases.h"
#include "tests/kernels/kernel_test_util.h"

namespace {

namespace emu = ll::cuda::emu;
namespace dev = ll::cuda::embedding_dev;
using bf16 = __nv_bfloat16;
using ll::test::emu_util::bf16_host_buffer;
using ll::test::emu_util::from_bf16_bits;
using ll::test::emu_util::read_from;

// The GPU test's table (embedding_test_cases.h), without its shapes marked slow here.
using ll::test::embedding_cases::kShapes;
using ll::test::embedding_cases::Shape;
namespace cases = ll::test::embedding_cases;

// What the sequences wrote.
struct Outputs {
  std::vector<uint16_t> out;  // [n, dim] bf16
  std::vector<float> dtable;  // [vocab, dim]
  int forward_flag = 0, backward_flag = 0;
  int first_bad = 0;                 // the id check's result (INT_MAX: none)
  std::vector<emu::KernelRun> runs;  // forward, backward, id check
};

Outputs run_sequences(const Shape& s, const std::vector<float>& table,
                      const std::vector<float>& dout, const std::vector<int32_t>& tokens,
                      const std::vector<float>& dtable0, unsigned max_blocks) {
  Outputs o;
  // Grids capped at max_blocks for the forward and the id check, so that their grid-stride
  // loops take several turns (the backward has one thread per column and no stride).
  const emu::EmuLauncher capped{&o.runs, max_blocks};
  const emu::EmuLauncher launch{&o.runs};
  const size_t off = size_t(s.out_offset), out_len = size_t(s.n * s.dim);
  auto t = bf16_host_buffer(table), g = bf16_host_buffer(dout), tok = emu::HostBuffer(tokens);
  auto out = emu::HostBuffer((off + out_len) * sizeof(uint16_t), true);  // [off + n * dim]
  auto dt = emu::HostBuffer(dtable0);
  auto flags = emu::HostBuffer(std::vector<int>{0, 0, INT_MAX});  // fwd, bwd flag; first bad
  int* const flag = flags.as<int>();
  dev::run_embedding_forward(capped, out.as<bf16>() + off, t.as<bf16>(), tok.as<int32_t>(), s.n,
                             s.vocab, s.dim, flag);
  dev::run_embedding_backward(launch, dt.as<float>(), g.as<bf16>(), tok.as<int32_t>(), s.n, s.vocab,
                              s.dim, flag + 1);
  dev::run_check_token_ids(capped, flag + 2, tok.as<int32_t>(), s.n, s.vocab);
  o.out = read_from<uint16_t>(out, off, out_len);
  o.dtable = dt.read<float>(dtable0.size());
  const auto f = flags.read<int>(3);
  o.forward_flag = f[0];
  o.backward_flag = f[1];
  o.first_bad = f[2];
  return o;
}

// Runs the shape with valid random ids against the CPU reference, bitwise.
void check_shape(const Shape& s, std::mt19937_64& rng, unsigned max_blocks) {
  using namespace ll::test;
  INFO("vocab " << s.vocab << " dim " << s.dim << " tokens " << s.n << " out offset "
                << s.out_offset << " max blocks " << max_blocks);
  const cases::Data in = cases::make_data(s, rng);

  const auto [o, rev] = emu_util::run_both_orders(
      [&] { return run_sequences(s, in.table, in.dout, in.tokens, in.dtable0, max_blocks); });
  cases::check_out(from_bf16_bits(o.out), in.out_ref);
  cases::check_dtable(o.dtable, in.dt_ref);
  CHECK(o.forward_flag == 0);
  CHECK(o.backward_flag == 0);
  CHECK(o.first_bad == INT_MAX);

  // Forward: one block per token (capped); backward: 256 columns a block; the id check: 256
  // tokens a block (capped).
  REQUIRE(o.runs.size() == 3);
  CHECK(o.runs[0].kernel == "embedding_forward_kernel");
  CHECK(o.runs[0].stats.blocks == std::min<int64_t>(s.n, max_blocks));
  CHECK(o.runs[1].kernel == "embedding_backward_kernel");
  CHECK(o.runs[1].stats.blocks == (s.dim + dev::kThreads - 1) / dev::kThreads);
  CHECK(o.runs[2].kernel == "check_ids_kernel");
  CHECK(o.runs[2].stats.blocks ==
        std::min<int64_t>((s.n + dev::kThreads - 1) / dev::kThreads, max_blocks));

  CHECK(rev.out == o.out);
  CHECK(same_bytes(rev.dtable, o.dtable));
}

}  // namespace

TEST_CASE("emulated embedding kernels match the CPU reference bitwise") {
  for (const uint64_t seed : ll::test::test_seeds()) {
    INFO("seed " << seed);
    std::mt19937_64 rng(seed);
    for (const Shape& s : kShapes) {
      if (s.emu_slow) continue;
      check_shape(s, rng, UINT_MAX);
    }
  }
}

TEST_CASE("emulated embedding forward and id check stride over more tokens than the grid") {
  std::mt19937_64 rng(ll::test::test_seeds()[1]);
  check_shape({50, 64, 37, 0, false}, rng, 3);   // 16-byte path, 3 blocks over 37 tokens
  check_shape({50, 7, 20, 0, false}, rng, 2);    // scalar path
  check_shape({20, 8, 1000, 0, false}, rng, 1);  // the id check: 1 block over 1000 tokens
}

TEST_CASE("emulated embedding kernels flag out-of-range ids without reading outside the table") {
  using namespace ll::test;
  namespace bad = cases::bad_ids;
  const int64_t vocab = bad::kVocab, dim = bad::kDim, n = bad::n();
  const auto table = bad::table();  // [V, D]
  const std::vector<int32_t>& tokens = bad::kTokens;
  const Shape s{vocab, dim, n, 0, false};
  const std::vector<float> ones(size_t(n * dim), 1.0f), zeros(size_t(vocab * dim), 0.0f);
  for (const emu::Order order : {emu::Order::Forward, emu::Order::Reverse}) {
    INFO("reverse order " << (order == emu::Order::Reverse));
    const Outputs o = emu_util::run_in_order(
        order, [&] { return run_sequences(s, table, ones, tokens, zeros, UINT_MAX); });
    CHECK(o.forward_flag == 1);
    CHECK(o.backward_flag == 1);
    bad::check_out(from_bf16_bits(o.out), table);
    bad::check_dtable(o.dtable);
    // check_token_ids reads the id at the first bad position and throws this message.
    REQUIRE(o.first_bad == 1);
    const std::string message =
        error_of([&] { dev::fail_bad_token_id(tokens[size_t(o.first_bad)], o.first_bad, vocab); });
    CHECK(contains(message, bad::kMessage));
  }
}

TEST_CASE("emulated embedding id check finds the first bad position across blocks") {
  // 1000 tokens: 4 blocks of 256, bad ids in blocks 3 and 2 (and a later one in block 2); the
  // minimum position wins whatever order the blocks' atomicMin calls come in.
  std::vector<int32_t> tokens(1000, 5);
  tokens[900] = 70000;
  tokens[700] = -3;
  tokens[701] = 32000;
  for (const unsigned max_blocks : {UINT_MAX, 1u}) {
    for (const emu::Order order : {emu::Order::Forward, emu::Order::Reverse}) {
      INFO("max blocks " << max_blocks << " reverse order " << (order == emu::Order::Reverse));
      auto tok = emu::HostBuffer(tokens);
      auto first_bad = emu::HostBuffer(std::vector<int>{INT_MAX});
      std::vector<emu::KernelRun> runs;
      ll::test::emu_util::run_in_order(order, [&] {
        dev::run_check_token_ids(emu::EmuLauncher{&runs, max_blocks}, first_bad.as<int>(),
                                 tok.as<int32_t>(), int64_t(tokens.size()), 32000);
      });
      const int pos = first_bad.read<int>(1)[0];
      CHECK(pos == 700);
      REQUIRE(runs.size() == 1);
      CHECK(runs[0].stats.blocks == std::min(4u, max_blocks));
      CHECK(ll::test::contains(
          ll::test::error_of([&] { dev::fail_bad_token_id(tokens[size_t(pos)], pos, 32000); }),
          "token id -3 at position 700 is outside the vocabulary [0, 32000)"));
    }
  }
}

#else
TEST_CASE("embedding kernels in the SIMT emulator") {
  std::printf(
      "SKIP: built without the CUDA toolkit (the emulator compiles CUDA device code "
      "with its headers)\n");
  std::exit(77);
}
#endif
