// The CUDA-core attention kernels (kernels/cuda/attention_kernels.cuh: forward, rowdot, dK/dV,
// dQ; the CUDA backend's default attention) and the cached decoding kernels
// (attention_cached_kernels.cuh: split-key partial + combine) run in the SIMT emulator against
// the fp32 CPU reference, with the GPU tests' tolerances: dense, S2, S2Roll, MHA and GQA, head
// dims 32, 64 and 128, N around the 32-row tiles; cached: one and several queries, short and
// split caches, GQA groups larger than one pass. Outputs and workspaces start poisoned; both
// fiber orders must give the same bytes.
#if defined(LL_HAVE_SIMT_EMULATOR)
#include "tests/cuda_emu/cuda_prelude.h"
#endif

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "kernels/attention_pattern.h"
#include "tests/kernels/attention_test_cases.h"
#include "tests/kernels/kernel_test_util.h"

#if defined(LL_HAVE_SIMT_EMULATOR)
#include "kernels/cpu/attention.h"
#include "kernels/cuda/attention_cached_kernels.cuh"
#include "kernels/cuda/attention_kernels.cuh"
#include "tests/cuda_emu/emu_launcher.h"
#include "tests/cuda_emu/host_buffer.h"
#include "tests/kernels/cuda/emu/emu_test_util.h"
#include "tests/kernels/cuda/gpu_test_util.h"

namespace {

namespace emu = ll::cuda::emu;
using bf16 = __nv_bfloat16;
using Case = ll::test::AttnCase;
using emu::HostBuffer;
using ll::test::emu_util::check_bf16_close;
using ll::test::emu_util::from_bf16_bits;
using ll::test::emu_util::to_bf16_bits;

double max_abs(const std::vector<float>& v) {
  double m = 0.0;
  for (float x : v) m = std::max(m, double(std::fabs(x)));
  return m;
}

struct Outputs {
  std::vector<uint16_t> out, dq, dk, dv;
  std::vector<float> lse;
};

Outputs run_emulated(const Case& c, const std::vector<float>& q, const std::vector<float>& k,
                     const std::vector<float>& v, const std::vector<float>& dout) {
  const ll::AttentionPattern mask = ll::test::mask_of(c);
  const size_t nq = q.size(), nkv = k.size(), rows = size_t(c.n * c.h);
  HostBuffer bq(to_bf16_bits(q)), bk(to_bf16_bits(k)), bv(to_bf16_bits(v)), bdo(to_bf16_bits(dout));
  HostBuffer bout(nq * 2, true), blse(rows * 4, true);
  ll::cuda::attn_dev::run_forward(emu::EmuLauncher{}, bout.as<bf16>(), blse.as<float>(),
                                  bq.as<bf16>(), bk.as<bf16>(), bv.as<bf16>(), c.n, int(c.h),
                                  int(c.hkv), c.hd, mask);
  HostBuffer bdq(nq * 2, true), bdk(nkv * 2, true), bdv(nkv * 2, true), ws(rows * 4, true);
  ll::cuda::attn_dev::run_backward(emu::EmuLauncher{}, bdq.as<bf16>(), bdk.as<bf16>(),
                                   bdv.as<bf16>(), bdo.as<bf16>(), bq.as<bf16>(), bk.as<bf16>(),
                                   bv.as<bf16>(), bout.as<bf16>(), blse.as<float>(), ws.as<float>(),
                                   c.n, int(c.h), int(c.hkv), c.hd, mask);
  return {bout.read<uint16_t>(nq), bdq.read<uint16_t>(nq), bdk.read<uint16_t>(nkv),
          bdv.read<uint16_t>(nkv), blse.read<float>(rows)};
}

void run_case(const Case& c, uint64_t seed) {
  INFO("mode " << std::string(ll::test::mode_name(c.mode)) << " N " << c.n << " H " << c.h
               << " Hkv " << c.hkv << " hd " << c.hd << " G " << c.g << " seed " << seed);
  std::mt19937_64 rng(seed);
  const size_t nq = size_t(c.n * c.h * c.hd), nkv = size_t(c.n * c.hkv * c.hd);
  const auto q = ll::test::round_bf16(ll::test::random_uniform(rng, nq, -1.5f, 1.5f));
  const auto k = ll::test::round_bf16(ll::test::random_uniform(rng, nkv, -1.5f, 1.5f));
  const auto v = ll::test::round_bf16(ll::test::random_uniform(rng, nkv, -1.0f, 1.0f));
  const auto dout = ll::test::round_bf16(ll::test::random_uniform(rng, nq, -1.0f, 1.0f));
  const ll::AttentionPattern mask = ll::test::mask_of(c);

  std::vector<float> out_ref(nq), lse_ref(size_t(c.h * c.n));
  ll::cpu::attention_forward(out_ref.data(), lse_ref.data(), q.data(), k.data(), v.data(), c.n, c.h,
                             c.hkv, c.hd, mask);

  const auto [got, rev] =
      ll::test::emu_util::run_both_orders([&] { return run_emulated(c, q, k, v, dout); });
  {
    INFO("forward out");
    check_bf16_close(got.out, out_ref, 1e-2, 1e-2, 1e-2);
  }
  {
    INFO("forward lse");
    ll::test::check_close(got.lse, ll::test::to_double(lse_ref), 1e-4, 1e-5, 1e-5);
  }
  // The backward against the CPU backward on the emulated forward's (bf16) out and its lse,
  // as the GPU test does with the GPU forward.
  std::vector<float> dq(nq), dk(nkv), dv(nkv);
  const std::vector<float> out_bf16 = from_bf16_bits(got.out);
  ll::cpu::attention_backward(dq.data(), dk.data(), dv.data(), dout.data(), q.data(), k.data(),
                              v.data(), out_bf16.data(), got.lse.data(), c.n, c.h, c.hkv, c.hd,
                              mask);
  const std::vector<float>* refs[3] = {&dq, &dk, &dv};
  const std::vector<uint16_t>* gots[3] = {&got.dq, &got.dk, &got.dv};
  const char* names[3] = {"dq", "dk", "dv"};
  for (int t = 0; t < 3; ++t) {
    INFO("backward " << names[t]);
    check_bf16_close(*gots[t], *refs[t], 1e-2 * max_abs(*refs[t]) + 1e-6, 1e-2, 1e-2);
  }
  CHECK_MESSAGE(rev.out == got.out, "out differs with the reverse thread order");
  CHECK_MESSAGE(ll::test::same_bytes(rev.lse, got.lse), "lse differs with the reverse order");
  CHECK_MESSAGE(rev.dq == got.dq, "dq differs with the reverse thread order");
  CHECK_MESSAGE(rev.dk == got.dk, "dk differs with the reverse thread order");
  CHECK_MESSAGE(rev.dv == got.dv, "dv differs with the reverse thread order");
}

struct CachedCase {
  int64_t past, n, h, hkv, hd;
};

void run_cached_case(const CachedCase& c, uint64_t seed) {
  INFO("past " << c.past << " n " << c.n << " H " << c.h << " Hkv " << c.hkv << " hd " << c.hd
               << " seed " << seed);
  std::mt19937_64 rng(seed);
  const int64_t keys = c.past + c.n;
  const size_t nq = size_t(c.n * c.h * c.hd), nkv = size_t(keys * c.hkv * c.hd);
  const auto q = ll::test::round_bf16(ll::test::random_uniform(rng, nq, -1.5f, 1.5f));
  const auto k = ll::test::round_bf16(ll::test::random_uniform(rng, nkv, -1.5f, 1.5f));
  const auto v = ll::test::round_bf16(ll::test::random_uniform(rng, nkv, -1.0f, 1.0f));
  std::vector<float> ref(nq);
  ll::cpu::attention_forward_cached(ref.data(), q.data(), k.data(), v.data(), c.n, c.past, c.h,
                                    c.hkv, c.hd);
  const ll::cuda::cached_dev::CachedPlan plan =
      ll::cuda::cached_dev::make_plan(c.n, c.past, c.h, c.hkv);
  std::vector<uint16_t> first;
  for (emu::Order order : {emu::Order::Forward, emu::Order::Reverse}) {
    const ll::test::emu_util::ScopedOrder in_order(order);
    HostBuffer bq(to_bf16_bits(q)), bk(to_bf16_bits(k)), bv(to_bf16_bits(v)), bout(nq * 2, true);
    // The plan's workspace (splits x rows x (hd + 2) floats), poisoned.
    HostBuffer ws(size_t(plan.splits * c.n * c.h * (c.hd + 2)) * 4, true);
    std::vector<emu::KernelRun> runs;
    ll::cuda::cached_dev::run_cached(emu::EmuLauncher{&runs}, bout.as<bf16>(), bq.as<bf16>(),
                                     bk.as<bf16>(), bv.as<bf16>(), c.n, c.past, int(c.h),
                                     int(c.hkv), c.hd, plan, ws.as<float>());
    CHECK(runs.size() == (plan.splits > 1 ? 2u : 1u));
    const std::vector<uint16_t> out = bout.read<uint16_t>(nq);
    if (order == emu::Order::Forward) {
      check_bf16_close(out, ref, 1e-2 * max_abs(ref) + 1e-6, 1e-2, 1e-2);
      first = out;
    } else {
      CHECK_MESSAGE(out == first, "cached out differs with the reverse thread order");
    }
  }
}

}  // namespace
#endif

TEST_CASE("emulated CUDA-core attention forward and backward match the CPU reference") {
#if defined(LL_HAVE_SIMT_EMULATOR)
  const auto seeds = ll::test::test_seeds();
  std::vector<Case> cases;
  for (int64_t hd : {32, 64, 128}) {
    cases.push_back({ll::AttnMode::Dense, 1, 4, 2, hd, 0});
    cases.push_back({ll::AttnMode::Dense, 70, 4, 1, hd, 0});     // 3 tiles, ragged
    cases.push_back({ll::AttnMode::S2, 100, 4, 2, hd, 24});      // G does not divide N
    cases.push_back({ll::AttnMode::S2Roll, 100, 4, 4, hd, 24});  // wrap-around
  }
  cases.push_back({ll::AttnMode::S2, 33, 2, 2, 64, 40});  // G > N
  int index = 0;
  for (const Case& c : cases) {
    run_case(c, ll::test::emu_util::case_seed(seeds, size_t(index)));
    ++index;
  }
#else
  std::printf(
      "SKIP: built without the CUDA toolkit (the emulator compiles CUDA device code "
      "with its headers)\n");
  std::exit(77);
#endif
}

TEST_CASE("emulated cached (decoding) attention matches the CPU reference") {
#if defined(LL_HAVE_SIMT_EMULATOR)
  const auto seeds = ll::test::test_seeds();
  // (past, n): one token into a short cache; into a cache long enough for 3 key splits (plus
  // the combine kernel); several queries over a split cache. Heads: MHA, GQA 4, and a group
  // of 16 (two passes of 8 heads).
  const CachedCase cases[] = {{1, 1, 4, 4, 32},    {37, 1, 8, 2, 64},   {600, 1, 16, 1, 128},
                              {300, 3, 4, 4, 128}, {700, 2, 16, 1, 32}, {5, 7, 8, 2, 64}};
  int index = 0;
  for (const CachedCase& c : cases) {
    run_cached_case(c, seeds[size_t(index) % seeds.size()] + uint64_t(index) * 31u);
    ++index;
  }
#else
  std::printf("SKIP: built without the CUDA toolkit\n");
  std::exit(77);
#endif
}
