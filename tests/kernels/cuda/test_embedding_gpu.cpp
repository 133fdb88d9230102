// CUDA embedding forward/backward against the CPU reference: both are exact (a bf16 copy;
// fp32 additions in the same order), so the comparison is bitwise. Bad ids never crash.
#include <doctest/doctest.h>

#include <random>
#include <vector>

#include "tests/gpu_skip.h"
#include "tests/kernels/kernel_test_util.h"

#if defined(LL_HAVE_CUDA)
#include "kernels/cpu/embedding.h"
#include "kernels/cuda/embedding.cuh"
#include "tests/kernels/cuda/gpu_test_util.h"
#endif

#if defined(LL_HAVE_CUDA)
namespace {
struct Shape {
  int64_t vocab, dim, n;
};
const Shape kShapes[] = {{5, 1, 3}, {50, 7, 20}, {1000, 64, 300}, {100, 4100, 64}, {7, 256, 1000}};
}  // namespace
#endif

TEST_CASE("embedding (cuda) forward and backward match the CPU reference bitwise") {
  ll::test::require_gpu();
#if defined(LL_HAVE_CUDA)
  using namespace ll::test;
  for (const uint64_t seed : test_seeds()) {
    std::mt19937_64 rng(seed);
    for (const Shape s : kShapes) {
      INFO("seed " << seed << " vocab " << s.vocab << " dim " << s.dim << " tokens " << s.n);
      const auto table = round_bf16(random_uniform(rng, size_t(s.vocab * s.dim)));  // [V, D]
      const auto g = round_bf16(random_uniform(rng, size_t(s.n * s.dim)));          // [N, D]
      const auto dt0 = random_uniform(rng, size_t(s.vocab * s.dim));                // [V, D]
      std::vector<int32_t> tokens(size_t(s.n));  // repeated ids: rows collide in backward
      std::uniform_int_distribution<int32_t> pick(0, int32_t(s.vocab - 1));
      for (auto& t : tokens) t = pick(rng);

      std::vector<float> out_ref(size_t(s.n * s.dim)), dt_ref = dt0;
      ll::cpu::embedding_forward(out_ref.data(), table.data(), tokens.data(), s.n, s.vocab, s.dim);
      ll::cpu::embedding_backward(dt_ref.data(), g.data(), tokens.data(), s.n, s.vocab, s.dim);

      auto d_table = upload_bf16(table);
      auto d_tokens = upload(tokens);
      auto d_g = upload_bf16(g);
      DeviceBuffer<bf16> d_out(out_ref.size());
      d_out.poison();
      auto d_flag = upload(std::vector<int>{0});
      ll::cuda::embedding_forward(d_out.get(), d_table.get(), d_tokens.get(), s.n, s.vocab, s.dim,
                                  d_flag.get(), 0);
      device_sync();
      check_close(download_bf16(d_out), to_double(out_ref), 0.0, 0.0, 1e-12);

      std::vector<float> first;
      for (int run = 0; run < 2; ++run) {
        auto d_dt = upload(dt0);
        ll::cuda::embedding_backward(d_dt.get(), d_g.get(), d_tokens.get(), s.n, s.vocab, s.dim,
                                     run == 0 ? d_flag.get() : nullptr, 0);
        device_sync();
        const auto got = download(d_dt);
        check_close(got, to_double(dt_ref), 0.0, 0.0, 1e-12);
        if (run == 0)
          first = got;
        else
          CHECK_MESSAGE(same_bytes(first, got), "dtable differs between two runs");
      }
      CHECK(download(d_flag)[0] == 0);
      CHECK_NOTHROW(ll::cuda::check_token_ids(d_tokens.get(), s.n, s.vocab, 0));
    }
  }
#endif
}

TEST_CASE("embedding (cuda) flags out-of-range ids without reading outside the table") {
  ll::test::require_gpu();
#if defined(LL_HAVE_CUDA)
  using namespace ll::test;
  const int64_t vocab = 10, dim = 16;
  std::mt19937_64 rng(7);
  const auto table = round_bf16(random_uniform(rng, size_t(vocab * dim)));
  const std::vector<int32_t> tokens = {3, -1, 9, 10, 1 << 30};
  const int64_t n = int64_t(tokens.size());
  auto d_table = upload_bf16(table);
  auto d_tokens = upload(tokens);
  auto d_flag = upload(std::vector<int>{0});
  DeviceBuffer<bf16> d_out(size_t(n * dim));
  d_out.poison();
  ll::cuda::embedding_forward(d_out.get(), d_table.get(), d_tokens.get(), n, vocab, dim,
                              d_flag.get(), 0);
  device_sync();
  CHECK(download(d_flag)[0] == 1);
  const auto out = download_bf16(d_out);
  for (int64_t i = 0; i < n; ++i) {
    const bool ok = tokens[size_t(i)] >= 0 && tokens[size_t(i)] < vocab;
    for (int64_t d = 0; d < dim; ++d) {
      const float want = ok ? table[size_t(tokens[size_t(i)] * dim + d)] : 0.0f;
      CHECK(out[size_t(i * dim + d)] == want);
    }
  }
  auto d_flag2 = upload(std::vector<int>{0});
  auto d_dt = upload(std::vector<float>(size_t(vocab * dim), 0.0f));
  auto d_g = upload_bf16(std::vector<float>(size_t(n * dim), 1.0f));
  ll::cuda::embedding_backward(d_dt.get(), d_g.get(), d_tokens.get(), n, vocab, dim, d_flag2.get(),
                               0);
  device_sync();
  CHECK(download(d_flag2)[0] == 1);
  const auto dt = download(d_dt);
  for (int64_t v = 0; v < vocab; ++v)
    CHECK(dt[size_t(v * dim)] == ((v == 3 || v == 9) ? 1.0f : 0.0f));
  try {
    ll::cuda::check_token_ids(d_tokens.get(), n, vocab, 0);
    FAIL("check_token_ids accepted a bad id");
  } catch (const ll::Error& e) {
    CHECK(contains(e.what(), "token id -1 at position 1"));
  }
  // N = 0 does nothing.
  ll::cuda::embedding_forward(nullptr, nullptr, nullptr, 0, vocab, dim, nullptr, 0);
  ll::cuda::embedding_backward(nullptr, nullptr, nullptr, 0, vocab, dim, nullptr, 0);
  ll::cuda::check_token_ids(nullptr, 0, vocab, 0);
#endif
}
