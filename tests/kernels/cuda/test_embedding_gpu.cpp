// CUDA embedding forward/backward against the CPU reference: both are exact (a bf16 copy;
// fp32 additions in the same order), so the comparison is bitwise. Bad ids never crash.
#include <doctest/doctest.h>

#include <random>
#include <vector>

#include "tests/gpu_skip.h"
#include "tests/kernels/kernel_test_util.h"

#if defined(LL_HAVE_CUDA)
#include "kernels/cuda/embedding.cuh"
#include "tests/kernels/cuda/gpu_test_util.h"
#include "tests/kernels/embedding_test_cases.h"

namespace {
using ll::test::embedding_cases::kShapes;
using ll::test::embedding_cases::Shape;
// The misaligned-output shapes are the emulator test's (its host buffers place them).
bool runs_here(const Shape& s) { return s.out_offset == 0; }
}  // namespace
#endif

TEST_CASE("embedding (cuda) forward and backward match the CPU reference bitwise") {
  ll::test::require_gpu();
#if defined(LL_HAVE_CUDA)
  using namespace ll::test;
  namespace cases = embedding_cases;
  for (const uint64_t seed : test_seeds()) {
    std::mt19937_64 rng(seed);
    for (const Shape s : kShapes) {
      if (!runs_here(s)) continue;
      INFO("seed " << seed << " vocab " << s.vocab << " dim " << s.dim << " tokens " << s.n);
      const cases::Data in = cases::make_data(s, rng);
      const auto &table = in.table, &g = in.dout, &dt0 = in.dtable0;
      const auto& tokens = in.tokens;

      auto d_table = upload_bf16(table);
      auto d_tokens = upload(tokens);
      auto d_g = upload_bf16(g);
      DeviceBuffer<bf16> d_out(in.out_ref.size());
      d_out.poison();
      auto d_flag = upload(std::vector<int>{0});
      ll::cuda::embedding_forward(d_out.get(), d_table.get(), d_tokens.get(), s.n, s.vocab, s.dim,
                                  d_flag.get(), 0);
      device_sync();
      cases::check_out(download_bf16(d_out), in.out_ref);

      std::vector<float> first;
      for (int run = 0; run < 2; ++run) {
        auto d_dt = upload(dt0);
        ll::cuda::embedding_backward(d_dt.get(), d_g.get(), d_tokens.get(), s.n, s.vocab, s.dim,
                                     run == 0 ? d_flag.get() : nullptr, 0);
        device_sync();
        const auto got = download(d_dt);
        cases::check_dtable(got, in.dt_ref);
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
  namespace bad = embedding_cases::bad_ids;
  const int64_t vocab = bad::kVocab, dim = bad::kDim, n = bad::n();
  const auto table = bad::table();
  const std::vector<int32_t>& tokens = bad::kTokens;
  auto d_table = upload_bf16(table);
  auto d_tokens = upload(tokens);
  auto d_flag = upload(std::vector<int>{0});
  DeviceBuffer<bf16> d_out(size_t(n * dim));
  d_out.poison();
  ll::cuda::embedding_forward(d_out.get(), d_table.get(), d_tokens.get(), n, vocab, dim,
                              d_flag.get(), 0);
  device_sync();
  CHECK(download(d_flag)[0] == 1);
  bad::check_out(download_bf16(d_out), table);
  auto d_flag2 = upload(std::vector<int>{0});
  auto d_dt = upload(std::vector<float>(size_t(vocab * dim), 0.0f));
  auto d_g = upload_bf16(std::vector<float>(size_t(n * dim), 1.0f));
  ll::cuda::embedding_backward(d_dt.get(), d_g.get(), d_tokens.get(), n, vocab, dim, d_flag2.get(),
                               0);
  device_sync();
  CHECK(download(d_flag2)[0] == 1);
  bad::check_dtable(download(d_dt));
  try {
    ll::cuda::check_token_ids(d_tokens.get(), n, vocab, 0);
    FAIL("check_token_ids accepted a bad id");
  } catch (const ll::Error& e) {
    CHECK(contains(e.what(), bad::kMessage));
  }
  // N = 0 does nothing.
  ll::cuda::embedding_forward(nullptr, nullptr, nullptr, 0, vocab, dim, nullptr, 0);
  ll::cuda::embedding_backward(nullptr, nullptr, nullptr, 0, vocab, dim, nullptr, 0);
  ll::cuda::check_token_ids(nullptr, 0, vocab, 0);
#endif
}
