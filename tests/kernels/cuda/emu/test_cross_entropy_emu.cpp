// The cross-entropy kernel and launch sequence (kernels/cuda/cross_entropy_kernels.cuh) run in
// the SIMT emulator against a double reference with the GPU test's tolerances: losses and the
// bf16 gradient left in place over the fp32 logits, on the 16-byte path (vocab % 4 == 0,
// aligned) and the scalar path (odd vocab, or logits off the 16-byte alignment), vocab from 1
// to 32001 (rows of one and of many gradient tiles), unlabelled rows, a row shifted by +1000,
// write_grad = false (logits untouched), the status bits (NaN / Inf logits, targets >= vocab,
// null status), and the grid-stride over rows (the sequence on a grid capped below the row
// count). The 32-warp block reductions (max, sum, __syncthreads_and) run in every case. Losses
// start as NaN bytes; every write_grad case also runs with the fibers in reverse order and must
// give the same bytes.
#if defined(LL_HAVE_SIMT_EMULATOR)
#include "tests/cuda_emu/cuda_prelude.h"
#endif

#include <doctest/doctest.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#if defined(LL_HAVE_SIMT_EMULATOR)
#include "kernels/cuda/cross_entropy_kernels.cuh"
#include "tests/cuda_emu/emu_launcher.h"
#include "tests/cuda_emu/host_buffer.h"
#include "tests/kernels/cross_entropy_test_cases.h"
#include "tests/kernels/cuda/emu/emu_test_util.h"
#include "tests/kernels/cuda/gpu_test_util.h"
#include "tests/kernels/kernel_test_util.h"

namespace {

namespace emu = ll::cuda::emu;
namespace dev = ll::cuda::cross_entropy_dev;
using ll::test::bf16_bits_to_f32;
using ll::test::emu_util::read_from;

using namespace ll::test::cross_entropy_cases;  // reference, random logits and targets

// One emulated cross_entropy_chunk and everything it left behind.
struct Run {
  std::vector<float> losses;           // [R]
  std::vector<float> grad;             // [R, V], the bf16 gradient rows (write_grad)
  std::vector<uint32_t> logits_after;  // [R, V] the logits' storage, raw
  int status = 0;
  std::vector<emu::KernelRun> runs;
};

struct Chunk {
  const std::vector<float>& logits;     // [R, V]
  const std::vector<int32_t>& targets;  // [R]
  int64_t rows, vocab;
  int64_t offset;  // floats before the logits: 1 puts them off the 16-byte alignment
  float loss_scale;
};

Run run_chunk(const Chunk& c, bool write_grad, int status0, bool use_status, unsigned max_blocks,
              emu::Order order) {
  Run o;
  const size_t off = size_t(c.offset), n = c.logits.size();
  std::vector<float> padded(off, 0.0f);  // [off + R * V]
  padded.insert(padded.end(), c.logits.begin(), c.logits.end());
  auto logits = emu::HostBuffer(padded), targets = emu::HostBuffer(c.targets);
  auto losses = emu::HostBuffer(size_t(c.rows) * sizeof(float), true);  // [R]
  auto status = emu::HostBuffer(std::vector<int>{status0});
  // Grids capped at max_blocks, so that the kernel's grid-stride loop over rows takes several
  // turns.
  ll::test::emu_util::run_in_order(order, [&] {
    dev::run_cross_entropy_chunk(emu::EmuLauncher{&o.runs, max_blocks}, losses.as<float>(),
                                 logits.as<float>() + off, targets.as<int32_t>(), c.rows,
                                 int(c.vocab), c.loss_scale, write_grad,
                                 use_status ? status.as<int>() : nullptr);
  });
  o.losses = losses.read<float>(size_t(c.rows));
  o.logits_after = read_from<uint32_t>(logits, off, n);
  o.status = status.read<int>(1)[0];
  if (write_grad) {
    // Row r's V bf16 values start at bf16 element r * 2V of the logits' storage.
    const auto bits = logits.read<uint16_t>(2 * (off + n));  // [2 off + R * 2V] bf16
    o.grad.resize(n);
    for (int64_t r = 0; r < c.rows; ++r)
      for (int64_t j = 0; j < c.vocab; ++j)
        o.grad[size_t(r * c.vocab + j)] =
            bf16_bits_to_f32(bits[2 * off + size_t(r * 2 * c.vocab + j)]);
  }
  return o;
}

// Checks losses and (when grad is non-null) the gradient rows against the reference (the GPU
// test's check).
void check_against(const std::vector<float>& losses, const std::vector<float>* grad,
                   const Reference& ref, const std::vector<int32_t>& targets, int64_t vocab) {
  using namespace ll::test;
  const size_t rows = targets.size();
  // Each loss within 1e-5 absolute + 1e-5 relative. The norm-wise bound is looser: a loss near
  // 0 (a target of probability ~1) is lse - x[t] in fp32, an absolute error of an ulp of x[t],
  // which is large relative to the loss itself (seen: one row of 7 ids, loss 0.00225, 2.7e-5).
  check_close(losses, ref.losses, 1e-5, 1e-5, 1e-4);
  size_t nonzero_loss_unlabelled = 0;
  for (size_t r = 0; r < rows; ++r)
    if (targets[r] < 0 && losses[r] != 0.0f) ++nonzero_loss_unlabelled;
  CHECK_MESSAGE(nonzero_loss_unlabelled == 0, "unlabelled rows with a non-zero loss");
  if (grad == nullptr) return;
  std::vector<float> got;    // labelled rows only
  std::vector<double> want;  // their reference
  size_t nonzero_unlabelled = 0;
  for (size_t r = 0; r < rows; ++r) {
    const size_t v = size_t(vocab);
    if (targets[r] < 0) {
      for (size_t j = 0; j < v; ++j)
        if ((*grad)[r * v + j] != 0.0f || std::signbit((*grad)[r * v + j])) ++nonzero_unlabelled;
      continue;
    }
    got.insert(got.end(), grad->begin() + long(r * v), grad->begin() + long((r + 1) * v));
    want.insert(want.end(), ref.grad.begin() + long(r * v), ref.grad.begin() + long((r + 1) * v));
  }
  CHECK_MESSAGE(nonzero_unlabelled == 0,
                nonzero_unlabelled << " gradient elements of unlabelled rows are not +0");
  // Within one bf16 rounding of the double value (plus the fp32 error in front of it).
  if (!got.empty()) check_close(got, want, 1e-30, kBf16Rtol, 1e-2);
}

// Random logits and targets of the shape, write_grad false and true (both fiber orders), on
// grids capped at max_blocks.
void check_shape(std::mt19937_64& rng, int64_t rows, int64_t vocab, int64_t offset,
                 unsigned max_blocks) {
  INFO("rows " << rows << " vocab " << vocab << " offset " << offset << " max blocks "
               << max_blocks);
  const auto logits = random_logits(rng, rows, vocab);  // [R, V]
  const auto targets = random_targets(rng, rows, vocab);
  int64_t n_labelled = 0;
  for (const int32_t t : targets) n_labelled += t >= 0;
  const float loss_scale = 0.75f / float(n_labelled);
  const Reference ref = reference(logits, targets, rows, vocab, loss_scale);
  const Chunk c{logits, targets, rows, vocab, offset, loss_scale};

  // write_grad = false: losses only, logits untouched.
  const Run only = run_chunk(c, false, 0, true, max_blocks, emu::Order::Forward);
  check_against(only.losses, nullptr, ref, targets, vocab);
  std::vector<uint32_t> logit_bits(logits.size());
  std::memcpy(logit_bits.data(), logits.data(), logits.size() * sizeof(float));
  CHECK_MESSAGE(only.logits_after == logit_bits, "write_grad = false changed the logits");
  CHECK(only.status == 0);
  // One launch, one block per row unless capped.
  REQUIRE(only.runs.size() == 1);
  CHECK(only.runs[0].kernel == "cross_entropy_kernel");
  CHECK(only.runs[0].stats.blocks == std::min<int64_t>(rows, max_blocks));

  const Run fwd = run_chunk(c, true, 0, true, max_blocks, emu::Order::Forward);
  check_against(fwd.losses, &fwd.grad, ref, targets, vocab);
  CHECK_MESSAGE(ll::test::same_bytes(fwd.losses, only.losses),
                "losses differ between write_grad = true and false");
  CHECK(fwd.status == 0);
  const Run rev = run_chunk(c, true, 0, true, max_blocks, emu::Order::Reverse);
  CHECK_MESSAGE(ll::test::same_bytes(rev.losses, fwd.losses), "losses differ in reverse order");
  CHECK_MESSAGE(rev.logits_after == fwd.logits_after, "gradient storage differs in reverse order");
}

}  // namespace

TEST_CASE("emulated cross_entropy kernel: losses and in-place bf16 gradient match a reference") {
  for (const uint64_t seed : ll::test::test_seeds()) {
    INFO("seed " << seed);
    std::mt19937_64 rng(seed);
    for (const int64_t vocab : {1, 7, 1000, 32000, 32001}) {
      for (const int64_t offset : {0, 1}) {  // offset 1: scalar path even when V % 4 == 0
        check_shape(rng, 1, vocab, offset, UINT_MAX);
        check_shape(rng, 3, vocab, offset, UINT_MAX);
      }
    }
    check_shape(rng, 40, 7, 0, UINT_MAX);  // many blocks (the GPU test: 130 rows)
  }
}

TEST_CASE("emulated cross_entropy kernel: Llama-3's and Qwen2.5's vocabularies") {
  // 128256 (Llama-3.x) and 152064 (Qwen2.5-7B's embedding rows): rows of ~60 gradient tiles,
  // both the 16-byte and the scalar path.
  std::mt19937_64 rng(ll::test::test_seeds()[0]);
  for (const int64_t vocab : {int64_t(128256), int64_t(152064)}) {
    check_shape(rng, 2, vocab, 0, UINT_MAX);
    check_shape(rng, 2, vocab, 1, UINT_MAX);
  }
}

TEST_CASE("emulated cross_entropy kernel strides over more rows than blocks") {
  std::mt19937_64 rng(ll::test::test_seeds()[1]);
  check_shape(rng, 9, 1000, 0, 2);
  check_shape(rng, 7, 33, 1, 3);
}

TEST_CASE("emulated cross_entropy kernel reports non-finite logits and out-of-range targets") {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  std::mt19937_64 rng(ll::test::test_seeds()[1]);
  // Scalar and 16-byte paths; 2053: scalar with a second value in some threads.
  for (const int64_t vocab : {int64_t(7), int64_t(1000), int64_t(2053)}) {
    const int64_t rows = 4;
    const auto clean = random_logits(rng, rows, vocab);  // [4, V]
    const float loss_scale = 0.25f;
    struct Case {
      const char* what;
      int64_t row;         // the row that gets the bad value
      float value;         // written at column vocab / 2 (+ a vector lane or a block's width)
      int32_t target;      // that row's target
      int expect;          // status bits expected (status starts at 4, never cleared)
      bool later = false;  // not the first value its thread reads: -Inf then leaves the
                           // online sum finite and only the __syncthreads_and makes it NaN
    };
    const Case cases[] = {
        {"NaN in an unlabelled row", 1, nan, -1, 4},
        {"NaN in a labelled row", 1, nan, 0, 4 | 1},
        {"+Inf in a labelled row", 1, inf, 0, 4 | 1},
        {"-Inf in a labelled row", 1, -inf, 0, 4 | 1},
        {"-Inf in a labelled row, after its thread's first value", 1, -inf, 0, 4 | 1, true},
        {"target == vocab", 1, 0.5f, int32_t(vocab), 4 | 2},
        {"target == INT32_MAX", 1, 0.5f, std::numeric_limits<int32_t>::max(), 4 | 2},
    };
    for (const Case& k : cases) {
      // The second lane of a 16-byte vector, or the same thread's element one block later.
      const int64_t column = vocab / 2 + (k.later ? (vocab % 4 == 0 ? 1 : dev::kThreads) : 0);
      if (column >= vocab) continue;  // no thread reads two values of a row this short
      for (const bool use_status : {true, false}) {
        INFO("vocab " << vocab << ": " << std::string(k.what)
                      << std::string(use_status ? "" : " (null status)"));
        auto logits = clean;
        logits[size_t(k.row * vocab + column)] = k.value;
        const std::vector<int32_t> targets = {int32_t(vocab - 1), k.target, -1, 3};
        const Chunk c{logits, targets, rows, vocab, 0, loss_scale};
        const Run o = run_chunk(c, true, 4, use_status, UINT_MAX, emu::Order::Forward);
        CHECK(o.status == (use_status ? k.expect : 4));
        // The other rows are unaffected.
        std::vector<int32_t> others = targets;
        others[size_t(k.row)] = -1;
        auto clean_others = logits;
        for (int64_t j = 0; j < vocab; ++j) clean_others[size_t(k.row * vocab + j)] = 0.0f;
        const Reference ref = reference(clean_others, others, rows, vocab, loss_scale);
        std::vector<float> losses_others = o.losses, grad_others = o.grad;
        losses_others[size_t(k.row)] = 0.0f;
        for (int64_t j = 0; j < vocab; ++j) grad_others[size_t(k.row * vocab + j)] = 0.0f;
        check_against(losses_others, &grad_others, ref, others, vocab);
        // The bad row itself.
        const bool labelled = k.target >= 0 && k.target < vocab;
        if (labelled) {
          CHECK_MESSAGE(std::isnan(o.losses[size_t(k.row)]), "loss " << o.losses[size_t(k.row)]);
          size_t not_nan = 0;
          for (int64_t j = 0; j < vocab; ++j)
            not_nan += !std::isnan(o.grad[size_t(k.row * vocab + j)]);
          CHECK_MESSAGE(not_nan == 0, not_nan << " gradient elements of the bad row are not NaN");
        } else {
          CHECK(o.losses[size_t(k.row)] == 0.0f);
          size_t nonzero = 0;
          for (int64_t j = 0; j < vocab; ++j) nonzero += o.grad[size_t(k.row * vocab + j)] != 0.0f;
          CHECK_MESSAGE(nonzero == 0, nonzero << " gradient elements of the skipped row");
        }
        if (!use_status) continue;  // the same kernel work as with a status word
        const Run rev = run_chunk(c, true, 4, use_status, UINT_MAX, emu::Order::Reverse);
        CHECK(rev.status == o.status);
        CHECK(ll::test::same_bytes(rev.losses, o.losses));
        CHECK(rev.logits_after == o.logits_after);
      }
    }
  }
}

#else
TEST_CASE("cross_entropy kernel in the SIMT emulator") {
  std::printf(
      "SKIP: built without the CUDA toolkit (the emulator compiles CUDA device code "
      "with its headers)\n");
  std::exit(77);
}
#endif
