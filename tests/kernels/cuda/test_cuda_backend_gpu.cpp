// The CUDA backend through the Backend interface against the CPU backend on the same
// bf16-rounded inputs: cuBLASLt matmuls in every form the model uses (accumulate, alpha), the
// chunked fused classifier (ragged chunks, unlabelled rows, lm_head gradient), uploads and
// downloads, the optimizer ops, memory accounting and the out-of-memory and bad-input errors.
// The kernels behind the other ops have their own tests (test_*_gpu.cpp); the whole model on
// this backend is tests/model/test_llama_cuda_gpu.cpp.
#include <doctest/doctest.h>

#include "tests/gpu_skip.h"

#if defined(LL_HAVE_CUDA)
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/cuda_backend.h"
#include "tests/kernels/backend_test_util.h"
#include "tests/kernels/cuda/gpu_test_util.h"
#include "tests/kernels/kernel_test_util.h"

namespace {

using namespace ll;
using ll::test::get;
using ll::test::put;

// ||a - b|| / ||b|| (Frobenius); every value of a must be finite.
double rel_error(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  double d2 = 0.0, r2 = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    REQUIRE(std::isfinite(a[i]));
    d2 += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    r2 += double(b[i]) * b[i];
  }
  return r2 == 0.0 ? std::sqrt(d2) : std::sqrt(d2 / r2);
}

struct Backends {
  CpuBackend cpu;
  CudaBackend gpu;
};

}  // namespace

TEST_CASE("cuda backend matmuls match the CPU backend (forward, input and weight gradients)") {
  ll::test::require_gpu();
  Backends b;
  for (uint64_t seed : ll::test::test_seeds()) {
    std::mt19937_64 rng(seed);
    const int64_t dims[][3] = {{1, 1, 1}, {37, 45, 19}, {128, 64, 200}, {300, 96, 8}};
    for (const auto& md : dims) {
      const int64_t m = md[0], k = md[1], n_out = md[2];
      INFO("M " << m << " K " << k << " Nout " << n_out << " seed " << seed);
      const auto x = ll::test::round_bf16(ll::test::random_uniform(rng, size_t(m * k)));
      const auto w = ll::test::round_bf16(ll::test::random_uniform(rng, size_t(n_out * k)));
      const auto dout = ll::test::round_bf16(ll::test::random_uniform(rng, size_t(m * n_out)));
      const auto prior_out = ll::test::round_bf16(ll::test::random_uniform(rng, size_t(m * n_out)));
      const auto prior_dx = ll::test::round_bf16(ll::test::random_uniform(rng, size_t(m * k)));
      const auto prior_dw = ll::test::random_uniform(rng, size_t(n_out * k));
      for (bool accumulate : {false, true}) {
        const float alpha = accumulate ? 0.5f : 1.0f;
        INFO("accumulate " << accumulate);
        // forward: out [M, Nout] (+)= alpha * x @ w^T, bf16 out
        auto ref = put(b.cpu, {m, n_out}, DType::F32, prior_out);
        b.cpu.matmul_forward(*ref, *put(b.cpu, {m, k}, DType::F32, x),
                             *put(b.cpu, {n_out, k}, DType::F32, w), accumulate, alpha);
        auto got = put(b.gpu, {m, n_out}, DType::BF16,
                       accumulate ? prior_out : ll::test::poisoned(size_t(m * n_out)));
        b.gpu.matmul_forward(*got, *put(b.gpu, {m, k}, DType::BF16, x),
                             *put(b.gpu, {n_out, k}, DType::BF16, w), accumulate, alpha);
        CHECK(rel_error(get(b.gpu, got), get(b.cpu, ref)) < 1e-2);
        // input gradient: dx [M, K] (+)= alpha * dout @ w, bf16 out
        auto ref_dx = put(b.cpu, {m, k}, DType::F32, prior_dx);
        b.cpu.matmul_backward_input(*ref_dx, *put(b.cpu, {m, n_out}, DType::F32, dout),
                                    *put(b.cpu, {n_out, k}, DType::F32, w), accumulate, alpha);
        auto got_dx = put(b.gpu, {m, k}, DType::BF16,
                          accumulate ? prior_dx : ll::test::poisoned(size_t(m * k)));
        b.gpu.matmul_backward_input(*got_dx, *put(b.gpu, {m, n_out}, DType::BF16, dout),
                                    *put(b.gpu, {n_out, k}, DType::BF16, w), accumulate, alpha);
        CHECK(rel_error(get(b.gpu, got_dx), get(b.cpu, ref_dx)) < 1e-2);
        // weight gradient: dw [Nout, K] (+)= alpha * dout^T @ x, fp32 out
        auto ref_dw = put(b.cpu, {n_out, k}, DType::F32, prior_dw);
        b.cpu.matmul_backward_weight(*ref_dw, *put(b.cpu, {m, n_out}, DType::F32, dout),
                                     *put(b.cpu, {m, k}, DType::F32, x), accumulate, alpha);
        auto got_dw = put(b.gpu, {n_out, k}, DType::F32,
                          accumulate ? prior_dw : ll::test::poisoned(size_t(n_out * k)));
        b.gpu.matmul_backward_weight(*got_dw, *put(b.gpu, {m, n_out}, DType::BF16, dout),
                                     *put(b.gpu, {m, k}, DType::BF16, x), accumulate, alpha);
        CHECK(rel_error(get(b.gpu, got_dw), get(b.cpu, ref_dw)) < 1e-4);
      }
    }
  }
}

TEST_CASE("cuda backend classifier matches the CPU backend chunk by chunk") {
  ll::test::require_gpu();
  Backends b;
  for (uint64_t seed : ll::test::test_seeds()) {
    std::mt19937_64 rng(seed);
    const int64_t n = 37, d = 64, v = 1000;
    const auto x = ll::test::round_bf16(ll::test::random_uniform(rng, size_t(n * d), -2.0f, 2.0f));
    const auto head = ll::test::round_bf16(ll::test::random_uniform(rng, size_t(v * d)));
    std::vector<int32_t> targets(static_cast<size_t>(n));
    std::uniform_int_distribution<int32_t> tok(0, int32_t(v - 1));
    for (size_t i = 0; i < targets.size(); ++i) targets[i] = i % 5 == 3 ? -1 : tok(rng);
    const std::vector<float> prior_dhead = ll::test::random_uniform(rng, size_t(v * d));
    const float loss_scale = 1.0f / 29.0f;

    auto cpu_targets = b.cpu.allocate({n}, DType::I32);
    b.cpu.upload_i32(*cpu_targets, targets.data());
    auto gpu_targets = b.gpu.allocate({n}, DType::I32);
    b.gpu.upload_i32(*gpu_targets, targets.data());
    auto cx = put(b.cpu, {n, d}, DType::F32, x), ch = put(b.cpu, {v, d}, DType::F32, head);
    auto gx = put(b.gpu, {n, d}, DType::BF16, x), gh = put(b.gpu, {v, d}, DType::BF16, head);

    for (int64_t chunk : {int64_t(1), int64_t(8), int64_t(37), int64_t(4096)}) {
      INFO("chunk " << chunk << " seed " << seed);
      auto closs = b.cpu.allocate({n}, DType::F32);
      auto cdx = b.cpu.allocate({n, d}, DType::F32);
      auto cdh = put(b.cpu, {v, d}, DType::F32, prior_dhead);
      const int64_t c_count = b.cpu.classifier_forward_backward(*closs, *cdx, *cdh, *cx, *ch,
                                                                *cpu_targets, chunk, loss_scale);
      auto gloss = put(b.gpu, {n}, DType::F32, ll::test::poisoned(size_t(n)));
      auto gdx = put(b.gpu, {n, d}, DType::BF16, ll::test::poisoned(size_t(n * d)));
      auto gdh = put(b.gpu, {v, d}, DType::F32, prior_dhead);
      const int64_t g_count = b.gpu.classifier_forward_backward(*gloss, *gdx, *gdh, *gx, *gh,
                                                                *gpu_targets, chunk, loss_scale);
      CHECK(g_count == c_count);
      CHECK(rel_error(get(b.gpu, gloss), get(b.cpu, closs)) < 1e-5);
      CHECK(rel_error(get(b.gpu, gdx), get(b.cpu, cdx)) < 2e-2);
      CHECK(rel_error(get(b.gpu, gdh), get(b.cpu, cdh)) < 1e-3);
      // Unlabelled rows: zero gradient exactly.
      const std::vector<float> dx = get(b.gpu, gdx);
      for (int64_t i = 3; i < n; i += 5)
        for (int64_t j = 0; j < d; ++j) CHECK(dx[size_t(i * d + j)] == 0.0f);

      // Forward only, and with the lm_head frozen (no dlm_head).
      auto gloss2 = put(b.gpu, {n}, DType::F32, ll::test::poisoned(size_t(n)));
      CHECK(b.gpu.classifier_forward(*gloss2, *gx, *gh, *gpu_targets, chunk) == c_count);
      CHECK(rel_error(get(b.gpu, gloss2), get(b.cpu, closs)) < 1e-5);
      auto gdx2 = b.gpu.allocate({n, d}, DType::BF16);
      b.gpu.classifier_forward_backward(*gloss2, *gdx2, Tensor{}, *gx, *gh, *gpu_targets, chunk,
                                        loss_scale);
      CHECK(ll::test::same_bytes(get(b.gpu, gdx2), get(b.gpu, gdx)));
    }

    // Bad labels and non-finite hidden states: the CPU backend's errors.
    std::vector<int32_t> bad = targets;
    bad[5] = int32_t(v);
    b.gpu.upload_i32(*gpu_targets, bad.data());
    auto gloss = b.gpu.allocate({n}, DType::F32);
    CHECK_THROWS_WITH_AS(b.gpu.classifier_forward(*gloss, *gx, *gh, *gpu_targets, 8),
                         doctest::Contains("outside the vocabulary"), ll::Error);
    b.gpu.upload_i32(*gpu_targets, targets.data());
    std::vector<float> x_nan = x;
    x_nan[size_t(2 * d + 1)] = std::nanf("");
    auto gx_nan = put(b.gpu, {n, d}, DType::BF16, x_nan);
    CHECK_THROWS_WITH_AS(b.gpu.classifier_forward(*gloss, *gx_nan, *gh, *gpu_targets, 8),
                         doctest::Contains("non-finite"), ll::Error);
  }
}

TEST_CASE("cuda backend uploads, copies, adds and runs the optimizer ops") {
  ll::test::require_gpu();
  Backends b;
  std::mt19937_64 rng(ll::test::test_seeds().back());
  const int64_t n = 1001;
  const auto a = ll::test::random_uniform(rng, size_t(n));
  const auto c = ll::test::random_uniform(rng, size_t(n));

  auto f = put(b.gpu, {n}, DType::F32, a);
  CHECK(ll::test::same_bytes(get(b.gpu, f), a));
  auto h = put(b.gpu, {n}, DType::BF16, a);
  CHECK(ll::test::same_bytes(get(b.gpu, h), ll::test::round_bf16(a)));

  auto h2 = b.gpu.allocate({n}, DType::BF16);
  b.gpu.copy(*h2, *h);
  CHECK(ll::test::same_bytes(get(b.gpu, h2), get(b.gpu, h)));
  b.gpu.add_inplace(*h2, *put(b.gpu, {n}, DType::BF16, c));
  std::vector<float> sum(static_cast<size_t>(n));
  const auto ar = ll::test::round_bf16(a), cr = ll::test::round_bf16(c);
  for (size_t i = 0; i < sum.size(); ++i) sum[i] = ar[i] + cr[i];
  CHECK(ll::test::same_bytes(get(b.gpu, h2), ll::test::round_bf16(sum)));
  CHECK_THROWS_AS(b.gpu.add_inplace(*h2, *f), ll::Error);  // dtype mismatch

  double ref = 0.0;
  for (float x : a) ref += double(x) * double(x);
  CHECK(b.gpu.sum_squares(*f) == doctest::Approx(ref).epsilon(1e-12));
  b.gpu.fill_zero(*f);
  CHECK(b.gpu.sum_squares(*f) == 0.0);

  // AdamW: fp32 master with a bf16 copy, and the master as its own parameter: both as on the CPU.
  AdamWStep step;
  step.lr = 1e-2;
  step.step = 3;
  step.grad_scale = 0.5f;
  const auto g = ll::test::random_uniform(rng, size_t(n));
  const auto m0 = ll::test::random_uniform(rng, size_t(n), -0.1f, 0.1f);
  const auto v0 = ll::test::random_uniform(rng, size_t(n), 0.0f, 0.01f);
  auto cm = put(b.cpu, {n}, DType::F32, a), cg = put(b.cpu, {n}, DType::F32, g);
  auto c1 = put(b.cpu, {n}, DType::F32, m0), c2 = put(b.cpu, {n}, DType::F32, v0);
  b.cpu.adamw_step(*cm, *cm, *cg, *c1, *c2, step);
  for (bool bf16_param : {true, false}) {
    auto gm = put(b.gpu, {n}, DType::F32, a), gg = put(b.gpu, {n}, DType::F32, g);
    auto g1 = put(b.gpu, {n}, DType::F32, m0), g2 = put(b.gpu, {n}, DType::F32, v0);
    auto gp = b.gpu.allocate({n}, DType::BF16);
    b.gpu.adamw_step(*gm, bf16_param ? *gp : *gm, *gg, *g1, *g2, step);
    CHECK(ll::test::same_bytes(get(b.gpu, gm), get(b.cpu, cm)));
    CHECK(ll::test::same_bytes(get(b.gpu, g1), get(b.cpu, c1)));
    CHECK(ll::test::same_bytes(get(b.gpu, g2), get(b.cpu, c2)));
    if (bf16_param)
      CHECK(ll::test::same_bytes(get(b.gpu, gp), ll::test::round_bf16(get(b.cpu, cm))));
  }
}

TEST_CASE("cuda backend counts its memory and explains out-of-memory and bad token ids") {
  ll::test::require_gpu();
  CudaBackend gpu;
  const BackendMemory before = gpu.memory();
  CHECK(before.device_total > 0);
  CHECK(before.device_used > 0);
  {
    OwnedTensor t = gpu.allocate({1000, 1000}, DType::BF16);
    CHECK(gpu.memory().in_use == before.in_use + 2000000);
    CHECK(gpu.memory().peak >= before.in_use + 2000000);
  }
  CHECK(gpu.memory().in_use == before.in_use);
  gpu.reset_peak();
  CHECK(gpu.memory().peak == before.in_use);
  // 4 TiB: more than any GPU has.
  CHECK_THROWS_WITH_AS(gpu.allocate({int64_t(1) << 40}, DType::F32),
                       doctest::Contains("out of GPU memory"), ll::Error);
  CHECK(gpu.memory().in_use == before.in_use);
  // The backend still works after the failed allocation.
  OwnedTensor ok = gpu.allocate({16}, DType::F32);
  gpu.fill_zero(*ok);
  CHECK(gpu.sum_squares(*ok) == 0.0);

  OwnedTensor table = gpu.allocate({10, 32}, DType::BF16);
  gpu.fill_zero(*table);
  OwnedTensor ids = gpu.allocate({3}, DType::I32);
  const int32_t bad[3] = {1, 10, 2};
  gpu.upload_i32(*ids, bad);
  OwnedTensor out = gpu.allocate({3, 32}, DType::BF16);
  CHECK_THROWS_WITH_AS(gpu.embedding_forward(*out, *table, *ids), doctest::Contains("10"),
                       ll::Error);
  CHECK_THROWS_AS(gpu.matmul_forward(*out, *table, *table, false), ll::Error);  // shapes
}

#else
TEST_CASE("cuda backend (skipped)") { ll::test::require_gpu(); }
#endif
