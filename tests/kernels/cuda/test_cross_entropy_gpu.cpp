// CUDA cross_entropy_chunk against a double host reference: losses, the bf16 gradient it
// leaves in place over the fp32 logits, unlabelled rows, the status bits (non-finite logits,
// out-of-range targets), write_grad = false, determinism, and the grid-stride over many rows.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "tests/gpu_skip.h"
#include "tests/kernels/cross_entropy_test_cases.h"
#include "tests/kernels/kernel_test_util.h"

#if defined(LL_HAVE_CUDA)
#include "kernels/cuda/cross_entropy.cuh"
#include "tests/kernels/cuda/gpu_test_util.h"
#endif

#if defined(LL_HAVE_CUDA)
namespace {

using ll::test::DeviceBuffer;
using namespace ll::test::cross_entropy_cases;  // reference, random logits and targets

// The bf16 gradient left in place: row r's V values start at element r * 2V of the storage.
std::vector<float> gradient_rows(const float* d_logits, int64_t rows, int64_t vocab) {
  const auto all = ll::test::download_bf16(reinterpret_cast<const __nv_bfloat16*>(d_logits),
                                           size_t(rows * vocab * 2));  // [R, 2V] bf16
  std::vector<float> g(size_t(rows * vocab));                          // [R, V]
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < vocab; ++j) g[size_t(r * vocab + j)] = all[size_t(r * 2 * vocab + j)];
  return g;
}

std::vector<float> download_n(const float* p, size_t n) {
  std::vector<float> v(n);
  if (n) LL_CUDA_CHECK(cudaMemcpy(v.data(), p, n * sizeof(float), cudaMemcpyDeviceToHost));
  return v;
}

int read_status(const DeviceBuffer<int>& s) { return ll::test::download(s)[0]; }

void set_status(const DeviceBuffer<int>& s, int value) {
  LL_CUDA_CHECK(cudaMemcpy(s.get(), &value, sizeof(int), cudaMemcpyHostToDevice));
}

// Checks losses and (when grad is non-null) the gradient rows against the reference.
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

}  // namespace
#endif

TEST_CASE("cross_entropy_chunk (cuda) losses and in-place bf16 gradient match a double reference") {
  ll::test::require_gpu();
#if defined(LL_HAVE_CUDA)
  using namespace ll::test;
  DeviceBuffer<int> status(1);
  for (const uint64_t seed : test_seeds()) {
    std::mt19937_64 rng(seed);
    for (const int64_t rows : {int64_t(1), int64_t(3), int64_t(130)}) {
      for (const int64_t vocab : {int64_t(1), int64_t(7), int64_t(1000), int64_t(32000),
                                  int64_t(32001), int64_t(128256), int64_t(152064)}) {
        // offset 1: logits not 16-byte aligned (scalar path even when V % 4 == 0).
        for (const int64_t offset : {int64_t(0), int64_t(1)}) {
          INFO("seed " << seed << " rows " << rows << " vocab " << vocab << " offset " << offset);
          const auto logits = random_logits(rng, rows, vocab);  // [R, V]
          const auto targets = random_targets(rng, rows, vocab);
          int64_t n_labelled = 0;
          for (const int32_t t : targets) n_labelled += t >= 0;
          const float loss_scale = 0.75f / float(n_labelled);
          const Reference ref = reference(logits, targets, rows, vocab, loss_scale);

          std::vector<float> padded(size_t(offset), 0.0f);
          padded.insert(padded.end(), logits.begin(), logits.end());
          auto d_targets = upload(targets);
          DeviceBuffer<float> d_losses(static_cast<size_t>(rows));
          set_status(status, 0);

          // write_grad = false: losses only, logits untouched.
          auto d_buf = upload(padded);
          float* d_logits = d_buf.get() + offset;
          d_losses.poison();
          ll::cuda::cross_entropy_chunk(d_losses.get(), d_logits, d_targets.get(), rows, vocab,
                                        loss_scale, false, status.get(), 0);
          device_sync();
          const auto losses_only = download(d_losses);
          check_against(losses_only, nullptr, ref, targets, vocab);
          CHECK_MESSAGE(same_bytes(download_n(d_logits, logits.size()), logits),
                        "write_grad = false changed the logits");

          // write_grad = true, twice on fresh copies: bitwise the same both times.
          std::vector<float> first_losses, first_grad;
          for (int run = 0; run < 2; ++run) {
            auto d_run = upload(padded);
            float* d_l = d_run.get() + offset;
            d_losses.poison();
            ll::cuda::cross_entropy_chunk(d_losses.get(), d_l, d_targets.get(), rows, vocab,
                                          loss_scale, true, status.get(), 0);
            device_sync();
            const auto losses = download(d_losses);
            const auto grad = gradient_rows(d_l, rows, vocab);
            if (run == 0) {
              check_against(losses, &grad, ref, targets, vocab);
              CHECK_MESSAGE(same_bytes(losses, losses_only),
                            "losses differ between write_grad = true and false");
              first_losses = losses;
              first_grad = grad;
            } else {
              CHECK_MESSAGE(same_bytes(losses, first_losses), "losses differ between two runs");
              CHECK_MESSAGE(same_bytes(grad, first_grad), "gradient differs between two runs");
            }
          }
          CHECK(read_status(status) == 0);
        }
      }
    }
  }
#endif
}

TEST_CASE("cross_entropy_chunk (cuda) strides over more rows than blocks") {
  ll::test::require_gpu();
#if defined(LL_HAVE_CUDA)
  if (ll::test::emulated_gpu()) {  // 70001 blocks; tests/kernels/cuda/emu caps the grid instead
    MESSAGE("skipped on the SIMT emulator (LL_CUDA_BACKEND_EMULATED): too long there");
    return;
  }
  using namespace ll::test;
  std::mt19937_64 rng(test_seeds()[1]);
  const int64_t rows = 70001, vocab = 7;  // more rows than the launcher's block cap (65536)
  const auto logits = random_logits(rng, rows, vocab);
  const auto targets = random_targets(rng, rows, vocab);
  const float loss_scale = 1.0f / 4096.0f;
  const Reference ref = reference(logits, targets, rows, vocab, loss_scale);
  auto d_logits = upload(logits);
  auto d_targets = upload(targets);
  DeviceBuffer<float> d_losses(static_cast<size_t>(rows));
  d_losses.poison();
  ll::cuda::cross_entropy_chunk(d_losses.get(), d_logits.get(), d_targets.get(), rows, vocab,
                                loss_scale, true, nullptr, 0);
  device_sync();
  const auto grad = gradient_rows(d_logits.get(), rows, vocab);
  check_against(download(d_losses), &grad, ref, targets, vocab);
#endif
}

TEST_CASE("cross_entropy_chunk (cuda) reports non-finite logits and out-of-range targets") {
  ll::test::require_gpu();
#if defined(LL_HAVE_CUDA)
  using namespace ll::test;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  std::mt19937_64 rng(test_seeds()[1]);
  DeviceBuffer<int> status(1);
  for (const int64_t vocab : {int64_t(7), int64_t(1000)}) {  // scalar and 16-byte paths
    const int64_t rows = 4;
    const auto clean = random_logits(rng, rows, vocab);  // [4, V]
    const float loss_scale = 0.25f;
    struct Case {
      const char* what;
      int64_t row;     // the row that gets the bad value
      float value;     // written at column vocab / 2
      int32_t target;  // that row's target
      int expect;      // status bits expected (status starts at 4, never cleared)
    };
    const Case cases[] = {
        {"NaN in an unlabelled row", 1, nan, -1, 4},
        {"NaN in a labelled row", 1, nan, 0, 4 | 1},
        {"+Inf in a labelled row", 1, inf, 0, 4 | 1},
        {"-Inf in a labelled row", 1, -inf, 0, 4 | 1},
        {"target == vocab", 1, 0.5f, int32_t(vocab), 4 | 2},
        {"target == INT32_MAX", 1, 0.5f, std::numeric_limits<int32_t>::max(), 4 | 2},
    };
    for (const Case& c : cases) {
      for (const bool use_status : {true, false}) {
        INFO("vocab " << vocab << ": " << c.what << (use_status ? "" : " (null status)"));
        auto logits = clean;
        logits[size_t(c.row * vocab + vocab / 2)] = c.value;
        std::vector<int32_t> targets = {int32_t(vocab - 1), c.target, -1, 3};
        auto d_logits = upload(logits);
        auto d_targets = upload(targets);
        DeviceBuffer<float> d_losses(static_cast<size_t>(rows));
        d_losses.poison();
        set_status(status, 4);
        ll::cuda::cross_entropy_chunk(d_losses.get(), d_logits.get(), d_targets.get(), rows, vocab,
                                      loss_scale, true, use_status ? status.get() : nullptr, 0);
        device_sync();
        const auto losses = download(d_losses);
        const auto grad = gradient_rows(d_logits.get(), rows, vocab);
        CHECK(read_status(status) == (use_status ? c.expect : 4));
        // The other rows are unaffected.
        std::vector<int32_t> others = targets;
        others[size_t(c.row)] = -1;
        auto clean_others = logits;
        for (int64_t j = 0; j < vocab; ++j) clean_others[size_t(c.row * vocab + j)] = 0.0f;
        const Reference ref = reference(clean_others, others, rows, vocab, loss_scale);
        std::vector<float> losses_others = losses, grad_others = grad;
        losses_others[size_t(c.row)] = 0.0f;
        for (int64_t j = 0; j < vocab; ++j) grad_others[size_t(c.row * vocab + j)] = 0.0f;
        check_against(losses_others, &grad_others, ref, others, vocab);
        // The bad row itself.
        const bool labelled = c.target >= 0 && c.target < vocab;
        if (labelled) {
          CHECK_MESSAGE(std::isnan(losses[size_t(c.row)]), "loss " << losses[size_t(c.row)]);
          size_t not_nan = 0;
          for (int64_t j = 0; j < vocab; ++j)
            not_nan += !std::isnan(grad[size_t(c.row * vocab + j)]);
          CHECK_MESSAGE(not_nan == 0, not_nan << " gradient elements of the bad row are not NaN");
        } else {
          CHECK(losses[size_t(c.row)] == 0.0f);
          size_t nonzero = 0;
          for (int64_t j = 0; j < vocab; ++j) nonzero += grad[size_t(c.row * vocab + j)] != 0.0f;
          CHECK_MESSAGE(nonzero == 0, nonzero << " gradient elements of the skipped row");
        }
      }
    }
  }
#endif
}

TEST_CASE("cross_entropy_chunk (cuda) rejects bad shapes") {
  ll::test::require_gpu();
#if defined(LL_HAVE_CUDA)
  // rows == 0 launches nothing.
  ll::cuda::cross_entropy_chunk(nullptr, nullptr, nullptr, 0, 32000, 1.0f, true, nullptr, 0);
  CHECK_THROWS_AS(
      ll::cuda::cross_entropy_chunk(nullptr, nullptr, nullptr, 1, 0, 1.0f, true, nullptr, 0),
      ll::Error);
  CHECK_THROWS_AS(
      ll::cuda::cross_entropy_chunk(nullptr, nullptr, nullptr, -1, 8, 1.0f, true, nullptr, 0),
      ll::Error);
  CHECK_THROWS_AS(
      ll::cuda::cross_entropy_chunk(nullptr, nullptr, nullptr, 1, 8, 1.0f, true, nullptr, 0),
      ll::Error);
#endif
}
