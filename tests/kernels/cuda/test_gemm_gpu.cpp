// kernels/cuda/gemm.h (cuBLASLt) against a double host GEMM on the same bf16-rounded inputs:
// all transposes, bf16 and f32 output, alpha/beta, odd shapes, ld > cols, unaligned pointers,
// plan reuse and bitwise repeatability.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "tests/gpu_skip.h"
#include "tests/kernels/kernel_test_util.h"

#if defined(LL_HAVE_CUDA)
#include "kernels/cuda/gemm.h"
#include "tests/kernels/cuda/gpu_test_util.h"

namespace {
using ll::cuda::GemmMatrix;
using ll::cuda::GemmRunner;
using ll::cuda::GemmType;
using namespace ll::test;

const float kNaNf = std::numeric_limits<float>::quiet_NaN();
const float kSentinel = 7.0f;  // D's padding: must come back unchanged
constexpr size_t kWorkspaceBytes = size_t(32) << 20;

// A row-major host matrix [rows, cols] stored in rows * ld floats (bf16-representable).
struct HostMatrix {
  int64_t rows = 0, cols = 0, ld = 0;
  std::vector<float> v;  // [rows, ld]
  float at(int64_t r, int64_t c) const { return v[size_t(r * ld + c)]; }
};

HostMatrix make_matrix(std::mt19937_64& rng, int64_t rows, int64_t cols, int64_t ld, float pad,
                       bool fill_nan = false) {
  HostMatrix m{rows, cols, ld, std::vector<float>(size_t(std::max<int64_t>(rows * ld, 1)), pad)};
  const auto r = round_bf16(random_uniform(rng, size_t(rows * cols), -1.0f, 1.0f));
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j)
      m.v[size_t(i * ld + j)] = fill_nan ? kNaNf : r[size_t(i * cols + j)];
  return m;
}

// Device copy of a host matrix, `offset` elements into the allocation (to test alignment).
struct DeviceMatrix {
  DeviceBuffer<bf16> b16{1};
  DeviceBuffer<float> f32{1};
  GemmType type;
  int64_t offset;
  GemmMatrix view(const HostMatrix& m) const {
    const void* p = type == GemmType::BF16 ? static_cast<const void*>(b16.get() + offset)
                                           : static_cast<const void*>(f32.get() + offset);
    return GemmMatrix{p, type, m.rows, m.cols, m.ld};
  }
  std::vector<float> download_all() const {
    std::vector<float> all = type == GemmType::BF16 ? download_bf16(b16) : download(f32);
    return std::vector<float>(all.begin() + offset, all.end());
  }
};

DeviceMatrix to_device(const HostMatrix& m, GemmType type, int64_t offset = 0) {
  std::vector<float> padded(size_t(offset), 0.0f);
  padded.insert(padded.end(), m.v.begin(), m.v.end());
  const bool is_bf16 = type == GemmType::BF16;
  return DeviceMatrix{is_bf16 ? upload_bf16(padded) : DeviceBuffer<bf16>(1),
                      is_bf16 ? DeviceBuffer<float>(1) : upload(padded), type, offset};
}

struct Stream {
  cudaStream_t s = nullptr;
  Stream() { LL_CUDA_CHECK(cudaStreamCreate(&s)); }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;
  ~Stream() { (void)cudaStreamDestroy(s); }
};

struct Case {
  int64_t m, n, k, pad;
  bool ta, tb;
  GemmType out;
  float alpha, beta;
  int64_t offset = 0;  // elements added to every pointer
};

// Runs one GEMM and checks it: per element |out - ref| <= tol * (|alpha| sum_l |a||b| +
// |beta| |d0|) + 1e-6 against a double reference; padding of D unchanged.
std::vector<float> run_and_check(GemmRunner& runner, cudaStream_t stream, std::mt19937_64& rng,
                                 const Case& c) {
  INFO("M " << c.m << " N " << c.n << " K " << c.k << " pad " << c.pad << " trans_a " << c.ta
            << " trans_b " << c.tb << " D " << (c.out == GemmType::BF16 ? "bf16" : "f32")
            << " alpha " << c.alpha << " beta " << c.beta << " offset " << c.offset);
  // A [M, K] or [K, M]; B [K, N] or [N, K]; padding NaN (must not be read).
  const int64_t ar = c.ta ? c.k : c.m, ac = c.ta ? c.m : c.k;
  const int64_t br = c.tb ? c.n : c.k, bc = c.tb ? c.k : c.n;
  const HostMatrix a = make_matrix(rng, ar, ac, ac + c.pad, kNaNf);
  const HostMatrix b = make_matrix(rng, br, bc, bc + 2 * c.pad, kNaNf);
  // D [M, N]: NaN when beta == 0 (must not be read), random otherwise; padding a sentinel.
  const HostMatrix d0 = make_matrix(rng, c.m, c.n, c.n + c.pad, kSentinel, c.beta == 0.0f);
  const DeviceMatrix da = to_device(a, GemmType::BF16, c.offset);
  const DeviceMatrix db = to_device(b, GemmType::BF16, c.offset);
  const DeviceMatrix dd = to_device(d0, c.out, c.offset);

  runner.run(dd.view(d0), da.view(a), c.ta, db.view(b), c.tb, c.alpha, c.beta);
  LL_CUDA_CHECK(cudaStreamSynchronize(stream));
  const std::vector<float> got = dd.download_all();  // [M, ld]

  const double tol = c.out == GemmType::BF16 ? 1e-2 : 1e-5;
  int64_t bad = 0;
  for (int64_t i = 0; i < c.m; ++i) {
    for (int64_t j = 0; j < d0.ld; ++j) {
      const float out = got[size_t(i * d0.ld + j)];
      if (j >= c.n) {
        if (out != kSentinel && bad++ == 0)
          FAIL_CHECK("padding of D written at " << i << ", " << j);
        continue;
      }
      double ref = 0.0, scale = 0.0;
      for (int64_t l = 0; l < c.k; ++l) {
        const double av = c.ta ? a.at(l, i) : a.at(i, l);
        const double bv = c.tb ? b.at(j, l) : b.at(l, j);
        ref += av * bv;
        scale += std::fabs(av * bv);
      }
      ref *= c.alpha;
      scale *= std::fabs(c.alpha);
      if (c.beta != 0.0f) {
        ref += double(c.beta) * d0.at(i, j);
        scale += std::fabs(double(c.beta) * d0.at(i, j));
      }
      const double err = std::fabs(double(out) - ref);
      if (!(err <= tol * scale + 1e-6) && bad++ == 0)
        FAIL_CHECK("element " << i << ", " << j << ": out " << out << " ref " << ref << " scale "
                              << scale);
    }
  }
  CHECK_MESSAGE(bad == 0, bad << " bad elements");
  return got;
}

struct Dims {
  int64_t m, n, k;
};
const Dims kDims[] = {{1, 1, 1}, {37, 45, 19}, {128, 96, 200}, {3, 64, 8}};
}  // namespace
#endif

TEST_CASE("GemmRunner matches a double reference (transposes, types, alpha/beta, ld > cols)") {
  ll::test::require_gpu();
#if defined(LL_HAVE_CUDA)
  Stream stream;
  DeviceBuffer<uint8_t> workspace(kWorkspaceBytes);
  GemmRunner runner(workspace.get(), workspace.bytes(), stream.s);
  for (const uint64_t seed : test_seeds()) {
    std::mt19937_64 rng(seed);
    INFO("seed " << seed);
    for (const Dims s : kDims)
      for (const int64_t pad : {0, 3})
        for (const bool ta : {false, true})
          for (const bool tb : {false, true})
            for (const GemmType out : {GemmType::BF16, GemmType::F32}) {
              run_and_check(runner, stream.s, rng, {s.m, s.n, s.k, pad, ta, tb, out, 1.0f, 0.0f});
              run_and_check(runner, stream.s, rng, {s.m, s.n, s.k, pad, ta, tb, out, -0.75f, 1.0f});
            }
  }
  MESSAGE("plans built " << runner.plans_built() << ", reused " << runner.plan_hits());
#endif
}

TEST_CASE("GemmRunner handles pointers aligned only to the element size") {
  ll::test::require_gpu();
#if defined(LL_HAVE_CUDA)
  Stream stream;
  DeviceBuffer<uint8_t> workspace(kWorkspaceBytes);
  GemmRunner runner(workspace.get(), workspace.bytes(), stream.s);
  std::mt19937_64 rng(test_seeds().back());
  // offset 1: bf16 pointers 2-byte aligned, an f32 D 4-byte aligned; offset 8: 16 bytes (bf16).
  for (const int64_t offset : {1, 8})
    for (const bool ta : {false, true})
      for (const bool tb : {false, true})
        for (const GemmType out : {GemmType::BF16, GemmType::F32})
          run_and_check(runner, stream.s, rng, {37, 45, 19, 1, ta, tb, out, 1.5f, 0.0f, offset});
#endif
}

TEST_CASE("GemmRunner reuses plans and repeats bitwise; K == 0 and bad shapes") {
  ll::test::require_gpu();
#if defined(LL_HAVE_CUDA)
  Stream stream;
  DeviceBuffer<uint8_t> workspace(kWorkspaceBytes);
  GemmRunner runner(workspace.get(), workspace.bytes(), stream.s);
  std::mt19937_64 rng(test_seeds().back());
  const int64_t M = 128, N = 96, K = 200;
  const HostMatrix a = make_matrix(rng, M, K, K, 0.0f);         // [M, K]
  const HostMatrix b = make_matrix(rng, N, K, K, 0.0f);         // [N, K], used transposed
  const HostMatrix d0 = make_matrix(rng, M, N, N, 0.0f, true);  // [M, N] NaN
  const DeviceMatrix da = to_device(a, GemmType::BF16), db = to_device(b, GemmType::BF16);
  for (const GemmType out : {GemmType::BF16, GemmType::F32}) {
    const DeviceMatrix dd = to_device(d0, out);
    runner.run(dd.view(d0), da.view(a), false, db.view(b), true, 1.0f, 0.0f);
    LL_CUDA_CHECK(cudaStreamSynchronize(stream.s));
    const auto first = dd.download_all();
    const int64_t built = runner.plans_built(), hits = runner.plan_hits();
    runner.run(dd.view(d0), da.view(a), false, db.view(b), true, 1.0f, 0.0f);
    LL_CUDA_CHECK(cudaStreamSynchronize(stream.s));
    CHECK(runner.plans_built() == built);
    CHECK(runner.plan_hits() == hits + 1);
    CHECK_MESSAGE(same_bytes(first, dd.download_all()), "second identical call differs");
  }
  CHECK(runner.plans_built() == 2);  // one per output type

  // K == 0: beta 0 zeroes D (not its padding), beta 1 leaves it, other betas throw.
  const HostMatrix e0 = make_matrix(rng, 5, 7, 9, kSentinel, true);  // [5, 7] NaN, ld 9
  const GemmMatrix a_empty{nullptr, GemmType::BF16, 5, 0, 0},
      b_empty{nullptr, GemmType::BF16, 0, 7, 7};
  for (const GemmType out : {GemmType::BF16, GemmType::F32}) {
    const DeviceMatrix de = to_device(e0, out);
    runner.run(de.view(e0), a_empty, false, b_empty, false, 1.0f, 1.0f);
    LL_CUDA_CHECK(cudaStreamSynchronize(stream.s));
    CHECK(same_bytes(de.download_all(), out == GemmType::BF16 ? round_bf16(e0.v) : e0.v));
    runner.run(de.view(e0), a_empty, false, b_empty, false, 1.0f, 0.0f);
    LL_CUDA_CHECK(cudaStreamSynchronize(stream.s));
    const auto zeroed = de.download_all();
    for (int64_t i = 0; i < 5; ++i)
      for (int64_t j = 0; j < 9; ++j)
        CHECK(zeroed[size_t(i * 9 + j)] == (j < 7 ? 0.0f : kSentinel));
    CHECK_THROWS_AS(runner.run(de.view(e0), a_empty, false, b_empty, false, 1.0f, 0.5f), ll::Error);
  }
  // M == 0 does nothing; shape mismatches throw before anything is enqueued.
  runner.run({nullptr, GemmType::BF16, 0, 7, 7}, {nullptr, GemmType::BF16, 0, 3, 3}, false,
             {db.b16.get(), GemmType::BF16, 3, 7, 7}, false, 1.0f, 0.0f);
  const DeviceMatrix dd = to_device(d0, GemmType::F32);
  CHECK_THROWS_AS(runner.run(dd.view(d0), da.view(a), false, db.view(b), false, 1.0f, 0.0f),
                  ll::Error);
  CHECK_THROWS_AS(runner.run(dd.view(d0), da.view(a), true, db.view(b), true, 1.0f, 0.0f),
                  ll::Error);
  CHECK(runner.plans_built() == 2);
#endif
}
