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
#include <string>
#include <utility>
#include <vector>

#if defined(LL_HAVE_CUDA_EMU)
namespace ll::cuda {
// atomicMin on an int, which cuda_prelude.h does not map (yet). In ll::cuda, around the
// kernels' namespace, so the kernel's unqualified call finds it first. The emulator runs one
// block at a time and a block's threads are fibers on one OS thread that switch only at
// barriers and warp collectives, so a plain read-modify-write is atomic.
inline int atomicMin(int* address, int value) {
  const int old = *address;
  if (value < old) *address = value;
  return old;
}
}  // namespace ll::cuda

#include "kernels/cpu/embedding.h"
#include "kernels/cuda/embedding_kernels.cuh"
#include "kernels/cuda/emu/emu_launcher.h"
#include "kernels/cuda/emu/host_buffer.h"
#include "tests/error_text.h"
#include "tests/kernels/cuda/gpu_test_util.h"
#include "tests/kernels/kernel_test_util.h"

namespace {

namespace emu = ll::cuda::emu;
namespace dev = ll::cuda::embedding_dev;
using bf16 = __nv_bfloat16;
using ll::test::bf16_bits_to_f32;
using ll::test::f32_to_bf16_bits;

// The emulator's launcher with every grid capped at max_blocks blocks, so that the kernels'
// grid-stride loops take several turns (forward and id check only: the backward has one
// thread per column and no stride).
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

emu::HostBuffer bf16_buffer(const std::vector<float>& v) {
  std::vector<uint16_t> bits(v.size());  // [n] bf16
  for (size_t i = 0; i < v.size(); ++i) bits[i] = f32_to_bf16_bits(v[i]);
  return emu::HostBuffer(bits);
}

std::vector<float> as_f32(const std::vector<uint16_t>& raw) {
  std::vector<float> v(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) v[i] = bf16_bits_to_f32(raw[i]);
  return v;
}

struct Shape {
  int64_t vocab, dim, n;
  int64_t out_offset;  // elements: 1 puts out off the 16-byte alignment (scalar path)
};

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
                      const std::vector<float>& dtable0, unsigned max_blocks, emu::Order order) {
  emu::set_order(order);
  Outputs o;
  const CappedGridLauncher capped{max_blocks, &o.runs};
  const emu::EmuLauncher launch{&o.runs};
  const size_t off = size_t(s.out_offset), out_len = size_t(s.n * s.dim);
  auto t = bf16_buffer(table), g = bf16_buffer(dout), tok = emu::HostBuffer(tokens);
  auto out = emu::HostBuffer((off + out_len) * sizeof(uint16_t), true);  // [off + n * dim]
  auto dt = emu::HostBuffer(dtable0);
  auto flags = emu::HostBuffer(std::vector<int>{0, 0, INT_MAX});  // fwd, bwd flag; first bad
  int* const flag = flags.as<int>();
  dev::run_embedding_forward(capped, out.as<bf16>() + off, t.as<bf16>(), tok.as<int32_t>(), s.n,
                             s.vocab, s.dim, flag);
  dev::run_embedding_backward(launch, dt.as<float>(), g.as<bf16>(), tok.as<int32_t>(), s.n, s.vocab,
                              s.dim, flag + 1);
  dev::run_check_token_ids(capped, flag + 2, tok.as<int32_t>(), s.n, s.vocab);
  const auto all = out.read<uint16_t>(off + out_len);
  o.out.assign(all.begin() + long(off), all.end());
  o.dtable = dt.read<float>(dtable0.size());
  const auto f = flags.read<int>(3);
  o.forward_flag = f[0];
  o.backward_flag = f[1];
  o.first_bad = f[2];
  emu::set_order(emu::Order::Forward);
  return o;
}

// Runs the shape with valid random ids against the CPU reference, bitwise.
void check_shape(const Shape& s, std::mt19937_64& rng, unsigned max_blocks) {
  using namespace ll::test;
  INFO("vocab " << s.vocab << " dim " << s.dim << " tokens " << s.n << " out offset "
                << s.out_offset << " max blocks " << max_blocks);
  const auto table = round_bf16(random_uniform(rng, size_t(s.vocab * s.dim)));  // [V, D]
  const auto dout = round_bf16(random_uniform(rng, size_t(s.n * s.dim)));       // [N, D]
  const auto dtable0 = random_uniform(rng, size_t(s.vocab * s.dim));            // [V, D]
  std::vector<int32_t> tokens(size_t(s.n));  // repeated ids: rows collide in backward
  std::uniform_int_distribution<int32_t> pick(0, int32_t(s.vocab - 1));
  for (auto& t : tokens) t = pick(rng);

  std::vector<float> out_ref(size_t(s.n * s.dim)), dt_ref = dtable0;
  ll::cpu::embedding_forward(out_ref.data(), table.data(), tokens.data(), s.n, s.vocab, s.dim);
  ll::cpu::embedding_backward(dt_ref.data(), dout.data(), tokens.data(), s.n, s.vocab, s.dim);

  const Outputs o = run_sequences(s, table, dout, tokens, dtable0, max_blocks, emu::Order::Forward);
  check_close(as_f32(o.out), to_double(out_ref), 0.0, 0.0, 1e-12);
  check_close(o.dtable, to_double(dt_ref), 0.0, 0.0, 1e-12);
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

  const Outputs rev =
      run_sequences(s, table, dout, tokens, dtable0, max_blocks, emu::Order::Reverse);
  CHECK(rev.out == o.out);
  CHECK(same_bytes(rev.dtable, o.dtable));
}

}  // namespace

TEST_CASE("emulated embedding kernels match the CPU reference bitwise") {
  // The GPU test's shapes, and the 16-byte-capable dim with a misaligned output.
  const Shape kShapes[] = {{5, 1, 3, 0},       {50, 7, 20, 0},    {1000, 64, 300, 0},
                           {100, 4100, 64, 0}, {7, 256, 1000, 0}, {1000, 64, 30, 1}};
  for (const uint64_t seed : ll::test::test_seeds()) {
    INFO("seed " << seed);
    std::mt19937_64 rng(seed);
    for (const Shape& s : kShapes) check_shape(s, rng, UINT_MAX);
  }
}

TEST_CASE("emulated embedding forward and id check stride over more tokens than the grid") {
  std::mt19937_64 rng(ll::test::test_seeds()[1]);
  check_shape({50, 64, 37, 0}, rng, 3);   // 16-byte path, 3 blocks over 37 tokens
  check_shape({50, 7, 20, 0}, rng, 2);    // scalar path
  check_shape({20, 8, 1000, 0}, rng, 1);  // the id check: 1 block over 1000 tokens
}

TEST_CASE("emulated embedding kernels flag out-of-range ids without reading outside the table") {
  using namespace ll::test;
  const int64_t vocab = 10, dim = 16;
  std::mt19937_64 rng(7);
  const auto table = round_bf16(random_uniform(rng, size_t(vocab * dim)));  // [V, D]
  const std::vector<int32_t> tokens = {3, -1, 9, 10, 1 << 30};
  const int64_t n = int64_t(tokens.size());
  const Shape s{vocab, dim, n, 0};
  const std::vector<float> ones(size_t(n * dim), 1.0f), zeros(size_t(vocab * dim), 0.0f);
  for (const emu::Order order : {emu::Order::Forward, emu::Order::Reverse}) {
    INFO("reverse order " << (order == emu::Order::Reverse));
    const Outputs o = run_sequences(s, table, ones, tokens, zeros, UINT_MAX, order);
    CHECK(o.forward_flag == 1);
    CHECK(o.backward_flag == 1);
    const auto out = as_f32(o.out);
    for (int64_t i = 0; i < n; ++i) {
      const bool ok = tokens[size_t(i)] >= 0 && tokens[size_t(i)] < vocab;
      for (int64_t d = 0; d < dim; ++d) {
        const float want = ok ? table[size_t(tokens[size_t(i)] * dim + d)] : 0.0f;
        CHECK(out[size_t(i * dim + d)] == want);
      }
    }
    for (int64_t v = 0; v < vocab; ++v)
      CHECK(o.dtable[size_t(v * dim)] == ((v == 3 || v == 9) ? 1.0f : 0.0f));
    // check_token_ids reads the id at the first bad position and throws this message.
    REQUIRE(o.first_bad == 1);
    const std::string message =
        error_of([&] { dev::fail_bad_token_id(tokens[size_t(o.first_bad)], o.first_bad, vocab); });
    CHECK(contains(message, "token id -1 at position 1"));
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
      emu::set_order(order);
      auto tok = emu::HostBuffer(tokens);
      auto first_bad = emu::HostBuffer(std::vector<int>{INT_MAX});
      std::vector<emu::KernelRun> runs;
      dev::run_check_token_ids(CappedGridLauncher{max_blocks, &runs}, first_bad.as<int>(),
                               tok.as<int32_t>(), int64_t(tokens.size()), 32000);
      emu::set_order(emu::Order::Forward);
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
