// The CUDA kernels at the sizes of issue 19 on a real GPU (N = 525312 = 2^19 + 2^10 tokens,
// hidden 4096: an [N, 4096] tensor holds more than 2^31 elements): RMSNorm forward and backward,
// RoPE, embedding forward and backward, the tensor-core attention forward and backward (S2-Attn, G
// = N / 4, 32 heads of 128) and one classifier chunk (2048 x 128256), each checked on sampled rows
// against the CPU reference. Needs about 40 GB of device memory and well under a minute on an H100.
// Every case says "long sequences", so scripts/gpu_check.sh leaves them out of its
// compute-sanitizer pass (far too slow there). The emulated CUDA build skips them (the emulator
// tests test_large_offsets_emu and test_attention_large_emu run the same offsets on windows).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "tests/gpu_skip.h"
#include "tests/kernels/kernel_test_util.h"

#if defined(LL_HAVE_CUDA)
#include "kernels/attention_pattern.h"
#include "kernels/cpu/embedding.h"
#include "kernels/cpu/rmsnorm.h"
#include "kernels/cpu/rope.h"
#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/attention_tc.cuh"
#include "kernels/cuda/convert.cuh"
#include "kernels/cuda/cross_entropy.cuh"
#include "kernels/cuda/embedding.cuh"
#include "kernels/cuda/rmsnorm.cuh"
#include "kernels/cuda/rope.cuh"
#include "kernels/rope_scaling.h"
#include "tests/kernels/attention_test_cases.h"
#include "tests/kernels/cuda/gpu_test_util.h"

namespace {

using namespace ll::test;

constexpr int64_t kN = 525312;  // tokens: issue 19's 2^19 and 1024 more, past 2^31 elements
constexpr int64_t kD = 4096;    // hidden size; 32 heads of 128
constexpr int64_t kHeads = 32, kHd = 128;
// Rows checked: the first, the middle, the first past 2^31 elements, and the last.
const std::vector<int64_t> kRows = {0, 1, 262144, 524288, kN - 2, kN - 1};

// Skips (returns true) in the emulated build, where these sizes would take hours.
bool skip_emulated() {
  if (!emulated_gpu()) return false;
  MESSAGE(
      "skipped in the emulated CUDA build (sizes past 2^31 elements; the emulator tests "
      "test_large_offsets_emu and test_attention_large_emu cover these offsets)");
  return true;
}

// Row r of a [*, cols] bf16 device tensor, and writing one.
std::vector<float> get_row(const bf16* p, int64_t r, int64_t cols) {
  return download_bf16(p + r * cols, size_t(cols));
}
void set_row(bf16* p, int64_t r, const std::vector<float>& v) {
  std::vector<uint16_t> bits(v.size());
  for (size_t i = 0; i < v.size(); ++i) bits[i] = f32_to_bf16_bits(v[i]);
  LL_CUDA_CHECK(
      cudaMemcpy(p + r * int64_t(v.size()), bits.data(), bits.size() * 2, cudaMemcpyHostToDevice));
}
std::vector<float> rand_row(std::mt19937_64& rng, int64_t n, float lo = -2.0f, float hi = 2.0f) {
  return round_bf16(random_uniform(rng, size_t(n), lo, hi));
}

// A deterministic pseudo-random bf16 value in [-1, 1) for element i of tensor `salt`, so that
// the host can recompute any input element of the attention tensors without holding them.
float hashed(uint64_t salt, int64_t i) {
  uint64_t z = uint64_t(i) * 0x9E3779B97F4A7C15ull + salt * 0xD1B54A32D192ED03ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  const float u = float(z >> 40) / float(1 << 24) * 2.0f - 1.0f;
  return bf16_bits_to_f32(f32_to_bf16_bits(u));
}

// x [count] bf16 on the device <- hashed(salt, i), uploaded in chunks.
void fill_hashed(bf16* x, int64_t count, uint64_t salt) {
  constexpr int64_t kChunk = int64_t(1) << 26;
  std::vector<uint16_t> bits(static_cast<size_t>(kChunk));
  for (int64_t c0 = 0; c0 < count; c0 += kChunk) {
    const int64_t c = std::min(kChunk, count - c0);
#pragma omp parallel for
    for (int64_t i = 0; i < c; ++i) bits[size_t(i)] = f32_to_bf16_bits(hashed(salt, c0 + i));
    LL_CUDA_CHECK(cudaMemcpy(x + c0, bits.data(), size_t(c) * 2, cudaMemcpyHostToDevice));
  }
}

}  // namespace
#endif

TEST_CASE("rmsnorm (cuda) forward and backward on long sequences: [525312, 4096]") {
  ll::test::require_gpu();
#if defined(LL_HAVE_CUDA)
  if (skip_emulated()) return;
  std::mt19937_64 rng(test_seeds()[1]);
  const float eps = 1e-5f, a = 0.75f, b = -0.5f;  // the rows not sampled: x = a, dout = b
  const size_t nd = size_t(kN * kD);
  DeviceBuffer<bf16> x(nd), out(nd), dout(nd), dx(nd);
  DeviceBuffer<float> rstd(static_cast<size_t>(kN)), dweight(static_cast<size_t>(kD));
  ll::cuda::fill_bf16(x.get(), a, int64_t(nd), 0);
  ll::cuda::fill_bf16(dout.get(), b, int64_t(nd), 0);
  ll::cuda::fill_bf16(dx.get(), 0.0f, int64_t(nd), 0);
  ll::cuda::fill_f32(dweight.get(), 0.0f, kD, 0);
  const auto w = rand_row(rng, kD);
  auto dw = upload_bf16(w);
  std::vector<std::vector<float>> xs, gs;
  for (int64_t r : kRows) {
    xs.push_back(rand_row(rng, kD));
    gs.push_back(rand_row(rng, kD));
    set_row(x.get(), r, xs.back());
    set_row(dout.get(), r, gs.back());
  }
  ll::cuda::rmsnorm_forward(out.get(), rstd.get(), x.get(), dw.get(), kN, kD, eps, 0);
  ll::cuda::rmsnorm_backward(dx.get(), dweight.get(), dout.get(), x.get(), dw.get(), rstd.get(), kN,
                             kD, nullptr, 0);
  device_sync();

  // Sampled rows and one constant row against the CPU reference; dweight sums all rows.
  std::vector<double> dw_ref(size_t(kD), 0.0);
  const std::vector<float> xa(size_t(kD), a), gb(size_t(kD), b);
  for (size_t s = 0; s <= kRows.size(); ++s) {
    const bool constant = s == kRows.size();
    const int64_t r = constant ? 12345 : kRows[s];
    const std::vector<float>& xr = constant ? xa : xs[s];
    const std::vector<float>& gr = constant ? gb : gs[s];
    INFO("row " << r);
    std::vector<float> o(static_cast<size_t>(kD)), dxr(size_t(kD), 0.0f), dwr(size_t(kD), 0.0f);
    float rs = 0.0f;
    ll::cpu::rmsnorm_forward(o.data(), &rs, xr.data(), w.data(), 1, kD, eps);
    ll::cpu::rmsnorm_backward(dxr.data(), dwr.data(), gr.data(), xr.data(), w.data(), &rs, 1, kD);
    check_close(get_row(out.get(), r, kD), to_double(o), 1e-2, 1e-2, 1e-2);
    check_close(get_row(dx.get(), r, kD), to_double(dxr), 1e-2, 1e-2, 1e-2);
    const double times = constant ? double(kN - int64_t(kRows.size())) : 1.0;
    for (int64_t d = 0; d < kD; ++d) dw_ref[size_t(d)] += times * dwr[size_t(d)];
  }
  check_close(download(dweight), dw_ref, 1e-2, 1e-3, 1e-3);
#endif
}

TEST_CASE("rope (cuda) forward and backward on long sequences: [525312, 32, 128]") {
  ll::test::require_gpu();
#if defined(LL_HAVE_CUDA)
  if (skip_emulated()) return;
  std::mt19937_64 rng(test_seeds()[1] + 1);
  const ll::RopeFrequencies freqs = ll::rope_frequencies({}, 500000.0, kHd, 8192, kN);
  DeviceBuffer<bf16> x(static_cast<size_t>(kN * kD));
  ll::cuda::fill_bf16(x.get(), 0.25f, kN * kD, 0);
  std::vector<std::vector<float>> xs;
  for (int64_t r : kRows) {
    xs.push_back(rand_row(rng, kD));
    set_row(x.get(), r, xs.back());
  }
  ll::cuda::rope_forward(x.get(), kN, kHeads, kHd, 0, freqs, 0);
  device_sync();
  for (size_t s = 0; s < kRows.size(); ++s) {
    INFO("token " << kRows[s]);
    std::vector<float> ref = xs[s];
    ll::cpu::rope_forward(ref.data(), 1, kHeads, kHd, kRows[s], freqs);
    check_close(get_row(x.get(), kRows[s], kD), to_double(ref), 1e-2, 1e-2, 1e-2);
    set_row(x.get(), kRows[s], xs[s]);
  }
  ll::cuda::rope_backward(x.get(), kN, kHeads, kHd, 0, freqs, 0);
  device_sync();
  for (size_t s = 0; s < kRows.size(); ++s) {
    INFO("token " << kRows[s]);
    std::vector<float> ref = xs[s];
    ll::cpu::rope_backward(ref.data(), 1, kHeads, kHd, kRows[s], freqs);
    check_close(get_row(x.get(), kRows[s], kD), to_double(ref), 1e-2, 1e-2, 1e-2);
  }
#endif
}

TEST_CASE(
    "embedding (cuda) forward and backward on long sequences: 525312 tokens, vocabulary 128256") {
  ll::test::require_gpu();
#if defined(LL_HAVE_CUDA)
  if (skip_emulated()) return;
  std::mt19937_64 rng(test_seeds()[1] + 2);
  constexpr int64_t kVocab = 128256;
  const float c = 0.125f;  // every table row not sampled, every dout row not sampled
  std::vector<int32_t> tokens(static_cast<size_t>(kN));
  std::uniform_int_distribution<int32_t> id(0, int32_t(kVocab - 1));
  for (int32_t& t : tokens) t = id(rng);
  auto dtok = upload(tokens);
  DeviceBuffer<bf16> table(static_cast<size_t>(kVocab * kD)), out(static_cast<size_t>(kN * kD)),
      dout(static_cast<size_t>(kN * kD));
  DeviceBuffer<float> dtable(static_cast<size_t>(kVocab * kD));
  ll::cuda::fill_bf16(table.get(), c, kVocab * kD, 0);
  ll::cuda::fill_bf16(dout.get(), c, kN * kD, 0);
  ll::cuda::fill_f32(dtable.get(), 0.0f, kVocab * kD, 0);
  out.poison();
  std::vector<std::vector<float>> rows, grads;
  for (int64_t r : kRows) {
    rows.push_back(rand_row(rng, kD));
    grads.push_back(rand_row(rng, kD));
    set_row(table.get(), tokens[size_t(r)], rows.back());
    set_row(dout.get(), r, grads.back());
  }
  DeviceBuffer<int> flag(1);
  LL_CUDA_CHECK(cudaMemset(flag.get(), 0, sizeof(int)));
  ll::cuda::embedding_forward(out.get(), table.get(), dtok.get(), kN, kVocab, kD, flag.get(), 0);
  ll::cuda::embedding_backward(dtable.get(), dout.get(), dtok.get(), kN, kVocab, kD, flag.get(), 0);
  device_sync();
  CHECK(download(flag)[0] == 0);
  for (size_t s = 0; s < kRows.size(); ++s) {
    const int64_t r = kRows[s];
    const int32_t tok = tokens[size_t(r)];
    INFO("token position " << r << " id " << tok);
    // The table row of tok: the sampled one written last for this id.
    std::vector<float> want = rows[s];
    for (size_t s2 = s + 1; s2 < kRows.size(); ++s2)
      if (tokens[size_t(kRows[s2])] == tok) want = rows[s2];
    check_close(get_row(out.get(), r, kD), to_double(want), 0.0, 0.0, 1e-30);
    // dtable[tok] = (positions with tok, not sampled) x c + the sampled dout rows with tok.
    std::vector<double> dref(size_t(kD), 0.0);
    for (int64_t p = 0; p < kN; ++p) {
      if (tokens[size_t(p)] != tok) continue;
      const auto it = std::find(kRows.begin(), kRows.end(), p);
      for (int64_t d = 0; d < kD; ++d)
        dref[size_t(d)] += it == kRows.end() ? double(c) : grads[size_t(it - kRows.begin())][d];
    }
    std::vector<float> got(static_cast<size_t>(kD));
    LL_CUDA_CHECK(cudaMemcpy(got.data(), dtable.get() + int64_t(tok) * kD, size_t(kD) * 4,
                             cudaMemcpyDeviceToHost));
    check_close(got, dref, 1e-6, 1e-6, 1e-6);
  }
#endif
}

TEST_CASE(
    "attention_forward_tc / attention_backward_tc (cuda) on long sequences: S2, N = 525312, 32 "
    "heads of 128") {
  ll::test::require_gpu();
#if defined(LL_HAVE_CUDA)
  if (skip_emulated()) return;
  const int64_t g = kN / 4, nqkv = kN * kD;
  const ll::AttentionPattern mask{ll::AttnMode::S2, kN, g, kHeads};
  DeviceBuffer<bf16> q(static_cast<size_t>(nqkv)), k(static_cast<size_t>(nqkv)),
      v(static_cast<size_t>(nqkv)), out(static_cast<size_t>(nqkv)), dout(static_cast<size_t>(nqkv)),
      dq(static_cast<size_t>(nqkv)), dk(static_cast<size_t>(nqkv)), dv(static_cast<size_t>(nqkv));
  DeviceBuffer<float> lse(static_cast<size_t>(kHeads * kN));
  fill_hashed(q.get(), nqkv, 1);
  fill_hashed(k.get(), nqkv, 2);
  fill_hashed(v.get(), nqkv, 3);
  fill_hashed(dout.get(), nqkv, 4);
  for (auto* b : {&out, &dq, &dk, &dv}) b->poison();
  ll::cuda::attention_forward_tc(out.get(), lse.get(), q.get(), k.get(), v.get(), kN, kHeads,
                                 kHeads, kHd, mask, 0);
  ll::cuda::attention_backward_tc(dq.get(), dk.get(), dv.get(), dout.get(), q.get(), k.get(),
                                  v.get(), out.get(), lse.get(), kN, kHeads, kHeads, kHd, mask,
                                  nullptr, 0);
  device_sync();

  // One head of each half; the last 16 rows of the sequence (their group's last keys: the
  // queries that see them are those 16 rows), and rows at the starts of groups.
  const double scale = 1.0 / std::sqrt(double(kHd));
  auto el = [&](uint64_t salt, int64_t i, int h, int64_t d) {
    return double(hashed(salt, (i * kHeads + h) * kHd + d));
  };
  struct Row {
    std::vector<double> o;    // out [hd]
    double m = 0.0, l = 0.0;  // max score, sum of exp
  };
  // Softmax statistics and output of query i (head h) over its visible keys.
  auto forward_row = [&](int h, int64_t i) {
    const ll::KeyRange kr = ll::attn_key_range(mask, h, i);
    std::vector<double> s(size_t(kr.last - kr.first + 1));
    Row row;
    row.m = -1e300;
    for (int64_t j = kr.first; j <= kr.last; ++j) {
      double dot = 0.0;
      for (int64_t d = 0; d < kHd; ++d) dot += el(1, i, h, d) * el(2, j, h, d);
      s[size_t(j - kr.first)] = dot * scale;
      row.m = std::max(row.m, dot * scale);
    }
    row.o.assign(size_t(kHd), 0.0);
    for (int64_t j = kr.first; j <= kr.last; ++j) {
      const double p = std::exp(s[size_t(j - kr.first)] - row.m);
      row.l += p;
      for (int64_t d = 0; d < kHd; ++d) row.o[size_t(d)] += p * el(3, j, h, d);
    }
    for (double& x : row.o) x /= row.l;
    return row;
  };
  const std::vector<float> lse_all = download(lse);
  for (int h : {0, int(kHeads) - 1}) {
    const int64_t shift = ll::attn_head_shift(mask, h);
    for (int64_t i : {shift, shift + 1, kN - 16, kN - 1}) {
      INFO("head " << h << " query " << i);
      const Row row = forward_row(h, i);
      check_close(download_bf16(out.get() + (i * kHeads + h) * kHd, size_t(kHd)), row.o, 1e-2, 1e-2,
                  1e-2);
      CHECK(lse_all[size_t(h * kN + i)] == doctest::Approx(row.m + std::log(row.l)).epsilon(1e-4));
    }
    // dq of query N - 1 and dk, dv of keys [N - 16, N): queries [N - 16, N) of the last group.
    constexpr int64_t kTail = 16;
    std::vector<Row> rows;
    std::vector<double> dvec(kTail);
    for (int64_t t = 0; t < kTail; ++t) {
      rows.push_back(forward_row(h, kN - kTail + t));
      double dsum = 0.0;
      const std::vector<float> o_gpu =
          download_bf16(out.get() + ((kN - kTail + t) * kHeads + h) * kHd, size_t(kHd));
      for (int64_t d = 0; d < kHd; ++d) dsum += el(4, kN - kTail + t, h, d) * o_gpu[size_t(d)];
      dvec[size_t(t)] = dsum;
    }
    std::vector<double> dk_ref(size_t(kTail * kHd), 0.0), dv_ref(size_t(kTail * kHd), 0.0);
    for (int64_t t = 0; t < kTail; ++t) {  // query i = N - kTail + t sees keys up to i
      const int64_t i = kN - kTail + t;
      const double lse_i = rows[size_t(t)].m + std::log(rows[size_t(t)].l);
      for (int64_t j = kN - kTail; j <= i; ++j) {
        double s = 0.0, dp = 0.0;
        for (int64_t d = 0; d < kHd; ++d) {
          s += el(1, i, h, d) * el(2, j, h, d);
          dp += el(4, i, h, d) * el(3, j, h, d);
        }
        const double p = std::exp(s * scale - lse_i), ds = p * (dp - dvec[size_t(t)]);
        for (int64_t d = 0; d < kHd; ++d) {
          dv_ref[size_t((j - (kN - kTail)) * kHd + d)] += p * el(4, i, h, d);
          dk_ref[size_t((j - (kN - kTail)) * kHd + d)] += ds * el(1, i, h, d) * scale;
        }
      }
    }
    std::vector<float> dk_got, dv_got;
    for (int64_t j = kN - kTail; j < kN; ++j) {
      const auto a = download_bf16(dk.get() + (j * kHeads + h) * kHd, size_t(kHd));
      const auto b2 = download_bf16(dv.get() + (j * kHeads + h) * kHd, size_t(kHd));
      dk_got.insert(dk_got.end(), a.begin(), a.end());
      dv_got.insert(dv_got.end(), b2.begin(), b2.end());
    }
    INFO("head " << h << ": dk, dv of the last 16 keys");
    check_grad("dk", dk_got, std::vector<float>(dk_ref.begin(), dk_ref.end()));
    check_grad("dv", dv_got, std::vector<float>(dv_ref.begin(), dv_ref.end()));

    // dq of the last query over its whole group.
    const int64_t i = kN - 1;
    const ll::KeyRange kr = ll::attn_key_range(mask, h, i);
    const double lse_i = rows.back().m + std::log(rows.back().l);
    std::vector<double> dq_ref(size_t(kHd), 0.0);
    for (int64_t j = kr.first; j <= kr.last; ++j) {
      double s = 0.0, dp = 0.0;
      for (int64_t d = 0; d < kHd; ++d) {
        s += el(1, i, h, d) * el(2, j, h, d);
        dp += el(4, i, h, d) * el(3, j, h, d);
      }
      const double ds = std::exp(s * scale - lse_i) * (dp - dvec.back());
      for (int64_t d = 0; d < kHd; ++d) dq_ref[size_t(d)] += ds * el(2, j, h, d) * scale;
    }
    check_grad("dq of the last query",
               download_bf16(dq.get() + (i * kHeads + h) * kHd, size_t(kHd)),
               std::vector<float>(dq_ref.begin(), dq_ref.end()));
  }
#endif
}

TEST_CASE("cross_entropy_chunk (cuda) for long sequences: a chunk of 2048 rows x 128256") {
  ll::test::require_gpu();
#if defined(LL_HAVE_CUDA)
  if (skip_emulated()) return;
  std::mt19937_64 rng(test_seeds()[1] + 3);
  constexpr int64_t kChunk = 2048, kVocab = 128256;
  DeviceBuffer<float> logits(static_cast<size_t>(kChunk * kVocab)),
      losses(static_cast<size_t>(kChunk));
  ll::cuda::fill_f32(logits.get(), 0.5f, kChunk * kVocab, 0);
  std::vector<int32_t> targets(static_cast<size_t>(kChunk));
  for (int64_t r = 0; r < kChunk; ++r) targets[size_t(r)] = int32_t((r * 7919) % kVocab);
  auto dtargets = upload(targets);
  const std::vector<int64_t> rows = {0, kChunk / 2, kChunk - 1};
  std::vector<std::vector<float>> xs;
  for (int64_t r : rows) {
    xs.push_back(random_uniform(rng, size_t(kVocab), -4.0f, 4.0f));
    LL_CUDA_CHECK(cudaMemcpy(logits.get() + r * kVocab, xs.back().data(), size_t(kVocab) * 4,
                             cudaMemcpyHostToDevice));
  }
  DeviceBuffer<int> status(1);
  LL_CUDA_CHECK(cudaMemset(status.get(), 0, sizeof(int)));
  const float scale = 1.0f / float(kChunk);
  ll::cuda::cross_entropy_chunk(losses.get(), logits.get(), dtargets.get(), kChunk, kVocab, scale,
                                true, status.get(), 0);
  device_sync();
  CHECK(download(status)[0] == 0);
  const std::vector<float> loss = download(losses);
  for (size_t s = 0; s < rows.size(); ++s) {
    const int64_t r = rows[s];
    INFO("row " << r);
    double mx = -1e300, sum = 0.0;
    for (float x : xs[s]) mx = std::max(mx, double(x));
    for (float x : xs[s]) sum += std::exp(double(x) - mx);
    const int32_t t = targets[size_t(r)];
    CHECK(loss[size_t(r)] == doctest::Approx(mx + std::log(sum) - xs[s][size_t(t)]).epsilon(1e-5));
    const auto grad =
        download_bf16(reinterpret_cast<const bf16*>(logits.get() + r * kVocab), size_t(kVocab));
    std::vector<double> want(static_cast<size_t>(kVocab));
    for (int64_t j = 0; j < kVocab; ++j)
      want[size_t(j)] =
          (std::exp(double(xs[s][size_t(j)]) - mx) / sum - (j == t ? 1.0 : 0.0)) * scale;
    check_close(grad, want, 1e-9, 1e-2, 1e-2);
  }
#endif
}
