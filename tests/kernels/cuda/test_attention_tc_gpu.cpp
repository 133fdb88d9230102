// Tensor-core attention forward (kernels/cuda/attention_tc.cuh) against the fp32 CPU reference
// (kernels/cpu/attention.h) and the CUDA-core kernel (kernels/cuda/attention.cuh) on the same
// bf16-rounded inputs: dense, S2, S2Roll (both halves of heads); MHA and GQA (H / Hkv 1, 2, 4);
// head dims 64 and 128; N around the tile sizes (64-row key tiles, 64- or 128-row query tiles)
// and G dividing N, not dividing N and G > N. Outputs are poisoned (0xFF bytes: bf16 and fp32
// NaN) so an unwritten element fails; two runs must give identical bytes. Long sequences (N
// 16384 to 65536: S2, S2Roll, ragged S2, dense) are checked against the CUDA-core kernel
// everywhere and against a double-precision reference on sampled rows (segment boundaries of
// both head halves).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "common/error.h"
#include "kernels/attention_pattern.h"
#include "tests/gpu_skip.h"
#include "tests/kernels/attention_test_cases.h"
#include "tests/kernels/kernel_test_util.h"

#if defined(LL_HAVE_CUDA)
#include "kernels/cpu/attention.h"
#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/attention_tc.cuh"
#include "tests/kernels/cuda/gpu_test_util.h"
#endif

#if defined(LL_HAVE_CUDA)
namespace {

using ll::test::bf16;
using ll::test::DeviceBuffer;
using ll::test::group_sizes;
using ll::test::mask_of;
using ll::test::mode_name;
using Case = ll::test::AttnCase;

// Random q, k, v rounded to bf16 (host copies hold exactly the device values) and uploaded.
struct Inputs {
  std::vector<float> q, k, v;  // [N, H, hd], [N, Hkv, hd], [N, Hkv, hd]
  DeviceBuffer<bf16> d_q, d_k, d_v;
  Inputs(std::vector<float> q_, std::vector<float> k_, std::vector<float> v_)
      : q(std::move(q_)),
        k(std::move(k_)),
        v(std::move(v_)),
        d_q(ll::test::upload_bf16(q)),
        d_k(ll::test::upload_bf16(k)),
        d_v(ll::test::upload_bf16(v)) {}
};

Inputs make_inputs(const Case& c, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const size_t nq = size_t(c.n * c.h * c.hd), nkv = size_t(c.n * c.hkv * c.hd);
  auto q = ll::test::round_bf16(ll::test::random_uniform(rng, nq, -1.5f, 1.5f));
  auto k = ll::test::round_bf16(ll::test::random_uniform(rng, nkv, -1.5f, 1.5f));
  auto v = ll::test::round_bf16(ll::test::random_uniform(rng, nkv, -1.0f, 1.0f));
  return Inputs(std::move(q), std::move(k), std::move(v));
}

struct Result {
  std::vector<float> out;     // [N, H, hd] (bf16 values)
  std::vector<uint16_t> raw;  // out as bf16 bits
  std::vector<float> lse;     // [H, N]
};

// Runs a forward launcher on poisoned outputs and downloads them.
template <typename Launch>
Result run_forward(const Case& c, const Inputs& in, bool with_lse, Launch launch) {
  const size_t nq = size_t(c.n * c.h * c.hd);
  DeviceBuffer<bf16> d_out(nq);
  DeviceBuffer<float> d_lse(size_t(c.h * c.n));
  d_out.poison();
  d_lse.poison();
  launch(d_out.get(), with_lse ? d_lse.get() : nullptr, in.d_q.get(), in.d_k.get(), in.d_v.get(),
         c.n, c.h, c.hkv, c.hd, mask_of(c), cudaStream_t(nullptr));
  ll::test::device_sync();
  Result r;
  r.out = ll::test::download_bf16(d_out);
  r.raw.resize(nq);
  if (nq) LL_CUDA_CHECK(cudaMemcpy(r.raw.data(), d_out.get(), nq * 2, cudaMemcpyDeviceToHost));
  if (with_lse) r.lse = ll::test::download(d_lse);
  return r;
}

Result run_tc(const Case& c, const Inputs& in, bool with_lse = true) {
  return run_forward(c, in, with_lse, ll::cuda::attention_forward_tc);
}
Result run_simt(const Case& c, const Inputs& in) {
  return run_forward(c, in, true, ll::cuda::attention_forward);
}

// The tensor-core kernel against the CUDA-core one: both round the output to bf16 once, and
// the tensor-core kernel also rounds the probabilities to bf16 before P V (at most 2^-9 of
// max |v| = 1 per element), so they agree within a few bf16 ulps.
void check_against_simt(const Result& tc, const Result& simt) {
  {
    INFO("out: tensor-core vs CUDA-core kernel");
    ll::test::check_close(tc.out, ll::test::to_double(simt.out), 5e-3, 1e-2, 1e-2);
  }
  {
    INFO("lse: tensor-core vs CUDA-core kernel");
    ll::test::check_close(tc.lse, ll::test::to_double(simt.lse), 2e-4, 2e-5, 1e-5);
  }
}

void run_case(const Case& c, uint64_t seed) {
  INFO("mode " << mode_name(c.mode) << " N " << c.n << " H " << c.h << " Hkv " << c.hkv << " hd "
               << c.hd << " G " << c.g << " seed " << seed);
  const Inputs in = make_inputs(c, seed);
  const ll::AttentionPattern mask = mask_of(c);

  std::vector<float> out_ref(in.q.size()), lse_ref(size_t(c.h * c.n));
  ll::cpu::attention_forward(out_ref.data(), lse_ref.data(), in.q.data(), in.k.data(), in.v.data(),
                             c.n, c.h, c.hkv, c.hd, mask);

  const Result tc = run_tc(c, in);
  {
    INFO("out vs CPU reference");
    ll::test::check_close(tc.out, ll::test::to_double(out_ref), 1e-2, 1e-2, 1e-2);
  }
  {
    INFO("lse vs CPU reference");
    ll::test::check_close(tc.lse, ll::test::to_double(lse_ref), 2e-4, 2e-5, 1e-5);
  }
  check_against_simt(tc, run_simt(c, in));
  if (ll::cuda::attention_tc_uses_hopper(mask) && !ll::test::emulated_gpu()) {
    const Result sm80 = run_forward(c, in, true, ll::cuda::attention_forward_tc_sm80);
    INFO("the mma.sync kernel on this Hopper device vs CPU reference");
    ll::test::check_close(sm80.out, ll::test::to_double(out_ref), 1e-2, 1e-2, 1e-2);
    ll::test::check_close(sm80.lse, ll::test::to_double(lse_ref), 2e-4, 2e-5, 1e-5);
  }

  // Deterministic: a second run gives the same bytes; lse = null leaves out unchanged.
  const Result again = run_tc(c, in);
  CHECK_MESSAGE(again.raw == tc.raw, "out differs between two identical runs");
  CHECK_MESSAGE(ll::test::same_bytes(again.lse, tc.lse), "lse differs between two identical runs");
  const Result no_lse = run_tc(c, in, false);
  CHECK_MESSAGE(no_lse.raw == tc.raw, "out differs when lse is null");
}

// out row (head, i) and its lse in double, straight from the mask definition.
void row_reference(const Inputs& in, const Case& c, const ll::AttentionPattern& mask, int64_t head,
                   int64_t i, std::vector<double>& out_row, double& lse) {
  const int64_t hd = c.hd, kvh = head / (c.h / c.hkv);
  const ll::KeyRange r = ll::attn_key_range(mask, head, i);
  const double scale = 1.0 / std::sqrt(double(hd));
  std::vector<double> s;
  double mx = -INFINITY;
  for (int64_t vi = r.first; vi <= r.last; ++vi) {
    const int64_t j = ll::attn_key_of_visit(mask, head, vi);
    double dot = 0.0;
    for (int64_t d = 0; d < hd; ++d)
      dot += double(in.q[size_t((i * c.h + head) * hd + d)]) *
             double(in.k[size_t((j * c.hkv + kvh) * hd + d)]);
    s.push_back(dot * scale);
    mx = std::max(mx, s.back());
  }
  out_row.assign(size_t(hd), 0.0);
  double sum = 0.0;
  for (int64_t vi = r.first; vi <= r.last; ++vi) {
    const int64_t j = ll::attn_key_of_visit(mask, head, vi);
    const double p = std::exp(s[size_t(vi - r.first)] - mx);
    sum += p;
    for (int64_t d = 0; d < hd; ++d)
      out_row[size_t(d)] += p * double(in.v[size_t((j * c.hkv + kvh) * hd + d)]);
  }
  for (double& x : out_row) x /= sum;
  lse = mx + std::log(sum);
}

}  // namespace
#endif

TEST_CASE("tensor-core attention forward matches the CPU reference and the CUDA-core kernel") {
  ll::test::require_gpu();
#if defined(LL_HAVE_CUDA)
  const bool hopper =
      ll::cuda::attention_tc_uses_hopper(mask_of(Case{ll::AttnMode::Dense, 1, 2, 2, 64, 0}));
  MESSAGE("tensor-core kernels for dense / S2 masks on this device: "
          << std::string(hopper ? "Hopper (wgmma + bulk tensor copies)" : "mma.sync"));
  const auto seeds = ll::test::test_seeds();
  // (H, Hkv): MHA, GQA 2 and 4; H >= 2 and even so both S2 halves exist.
  const int64_t heads[][2] = {{4, 4}, {4, 2}, {8, 2}};
  const int64_t ns[] = {1, 7, 63, 64, 65, 100, 257, 1000, 4096};
  int index = 0;
  for (ll::AttnMode mode : {ll::AttnMode::Dense, ll::AttnMode::S2, ll::AttnMode::S2Roll}) {
    for (int64_t n : ns) {
      if (ll::test::emulated_gpu() && n > 257) continue;  // the emulator: minutes per case
      // Dense ignores G: each N once.
      const std::vector<int64_t> gs =
          mode == ll::AttnMode::Dense ? std::vector<int64_t>{0} : group_sizes(n);
      for (int64_t g : gs) {
        for (int64_t hd : {64, 128}) {
          const auto& hh = heads[size_t(index) % 3];
          run_case(Case{mode, n, hh[0], hh[1], hd, g},
                   seeds[size_t(index) % seeds.size()] + uint64_t(index) * 7919u);
          ++index;
        }
      }
    }
  }
  // Every (H, Hkv) with both head dims on one S2 and one S2Roll shape that is ragged in both
  // query tile sizes and in the key tile.
  for (const auto& hh : heads)
    for (int64_t hd : {64, 128})
      for (ll::AttnMode mode : {ll::AttnMode::S2, ll::AttnMode::S2Roll})
        run_case(Case{mode, 200, hh[0], hh[1], hd, 72}, seeds.back() + uint64_t(hd + hh[0]));
#endif
}

TEST_CASE("tensor-core attention forward: long sequences (N 16384 .. 65536)") {
  ll::test::require_gpu();
#if defined(LL_HAVE_CUDA)
  if (ll::test::emulated_gpu()) {
    MESSAGE("skipped on the SIMT emulator (LL_CUDA_BACKEND_EMULATED): too long there");
    return;
  }
  const auto seeds = ll::test::test_seeds();
  std::vector<Case> cases;
  for (int64_t hd : {64, 128}) {
    cases.push_back({ll::AttnMode::S2, 16384, 8, 4, hd, 4096});
    cases.push_back({ll::AttnMode::S2, 65536, 4, 2, hd, 16384});
  }
  cases.push_back({ll::AttnMode::S2Roll, 65536, 4, 2, 128, 16384});
  cases.push_back({ll::AttnMode::S2, 40000, 4, 4, 128, 10002});  // ragged last segments
  cases.push_back({ll::AttnMode::Dense, 65536, 2, 1, 128, 0});
  for (const Case& c : cases) {
    const int64_t hd = c.hd;
    const uint64_t seed = seeds.back() + uint64_t(c.n + hd + int64_t(c.mode));
    INFO("mode " << mode_name(c.mode) << " N " << c.n << " G " << c.g << " H " << c.h << " Hkv "
                 << c.hkv << " hd " << hd << " seed " << seed);
    const Inputs in = make_inputs(c, seed);
    const ll::AttentionPattern mask = mask_of(c);
    const Result tc = run_tc(c, in);
    check_against_simt(tc, run_simt(c, in));
    const Result again = run_tc(c, in);
    CHECK_MESSAGE(again.raw == tc.raw, "out differs between two identical runs");

    // Sampled rows against a double-precision reference: around every segment boundary of
    // both head halves, plus random rows.
    std::vector<int64_t> rows;
    for (int64_t b = 0; b <= c.n; b += c.g > 0 ? c.g / 2 : 8192)
      for (int64_t d : {-2, -1, 0, 1, 63, 64})
        if (b + d >= 0 && b + d < c.n) rows.push_back(b + d);
    std::mt19937_64 rng(seed);
    for (int t = 0; t < 64; ++t) rows.push_back(int64_t(rng() % uint64_t(c.n)));
    std::vector<float> got, got_lse;
    std::vector<double> ref, ref_lse, row;
    for (int64_t head = 0; head < c.h; ++head) {
      for (int64_t i : rows) {
        double l = 0.0;
        row_reference(in, c, mask, head, i, row, l);
        ref.insert(ref.end(), row.begin(), row.end());
        ref_lse.push_back(l);
        const size_t base = size_t((i * c.h + head) * hd);
        got.insert(got.end(), tc.out.begin() + long(base),
                   tc.out.begin() + long(base + size_t(hd)));
        got_lse.push_back(tc.lse[size_t(head * c.n + i)]);
      }
    }
    {
      INFO("sampled rows: out vs double reference");
      ll::test::check_close(got, ref, 1e-2, 1e-2, 1e-2);
    }
    {
      INFO("sampled rows: lse vs double reference");
      ll::test::check_close(got_lse, ref_lse, 2e-4, 2e-5, 1e-5);
    }
  }
#endif
}

TEST_CASE("tensor-core attention forward rejects unsupported shapes and accepts N = 0") {
  ll::test::require_gpu();
#if defined(LL_HAVE_CUDA)
  using ll::cuda::attention_forward_tc;
  DeviceBuffer<bf16> buf(1 << 15);
  bf16* p = buf.get();
  const ll::AttentionPattern dense{ll::AttnMode::Dense, 8, 0, 4};
  CHECK_THROWS_AS(attention_forward_tc(p, nullptr, p, p, p, 8, 4, 4, 32, dense, nullptr),
                  ll::Error);  // head_dim 32 is the CUDA-core kernel's only
  CHECK_THROWS_AS(attention_forward_tc(p, nullptr, p, p, p, 8, 4, 4, 96, dense, nullptr),
                  ll::Error);
  CHECK_THROWS_AS(attention_forward_tc(p, nullptr, p, p, p, 8, 4, 3, 64, dense, nullptr),
                  ll::Error);
  CHECK_THROWS_AS(attention_forward_tc(p, nullptr, p, p, p, 9, 4, 4, 64, dense, nullptr),
                  ll::Error);  // mask is for N = 8
  const ll::AttentionPattern odd{ll::AttnMode::S2, 8, 3, 4};
  CHECK_THROWS_AS(attention_forward_tc(p, nullptr, p, p, p, 8, 4, 4, 64, odd, nullptr), ll::Error);
  const ll::AttentionPattern odd_heads{ll::AttnMode::S2Roll, 8, 4, 3};
  CHECK_THROWS_AS(attention_forward_tc(p, nullptr, p, p, p, 8, 3, 3, 64, odd_heads, nullptr),
                  ll::Error);
  CHECK_THROWS_AS(attention_forward_tc(p + 1, nullptr, p, p, p, 8, 4, 4, 64, dense, nullptr),
                  ll::Error);  // out not 16-byte aligned
  CHECK_THROWS_AS(attention_forward_tc(p, nullptr, p, p + 4, p, 8, 4, 4, 64, dense, nullptr),
                  ll::Error);  // k not 16-byte aligned
  CHECK_THROWS_AS(attention_forward_tc(nullptr, nullptr, p, p, p, 8, 4, 4, 64, dense, nullptr),
                  ll::Error);
  const ll::AttentionPattern empty{ll::AttnMode::S2, 0, 4, 4};
  attention_forward_tc(nullptr, nullptr, nullptr, nullptr, nullptr, 0, 4, 2, 128, empty, nullptr);
  ll::test::device_sync();
#endif
}
