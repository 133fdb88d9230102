#pragma once
// One case of the emulated tensor-core attention tests (test_attention_tc_emu.cpp, the sweep in
// test_attention_tc_sweep_emu_slow.cpp): random bf16 inputs, the forward and the backward run
// in the SIMT emulator in both fiber orders, against the fp32 CPU reference. CUDA builds only.
#include <doctest/doctest.h>

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "kernels/attention_pattern.h"
#include "kernels/cpu/attention.h"
#include "tests/cuda_emu/attention_tc_emulated.h"
#include "tests/kernels/attention_test_cases.h"
#include "tests/kernels/cuda/emu/emu_test_util.h"
#include "tests/kernels/cuda/gpu_test_util.h"
#include "tests/kernels/kernel_test_util.h"

namespace ll::test::emu_case {

namespace emu = ll::cuda::emu;

using Case = AttnCase;

using emu_util::from_bf16_bits;
using emu_util::run_both_orders;
using emu_util::to_bf16_bits;

struct Inputs {
  std::vector<float> q, k, v, out_ref, lse_ref;
};

// Random inputs of case c and the CPU reference forward.
inline Inputs make_inputs(const Case& c, std::mt19937_64& rng) {
  const size_t nq = size_t(c.n * c.h * c.hd), nkv = size_t(c.n * c.hkv * c.hd);
  Inputs in;
  in.q = ll::test::round_bf16(ll::test::random_uniform(rng, nq, -1.5f, 1.5f));
  in.k = ll::test::round_bf16(ll::test::random_uniform(rng, nkv, -1.5f, 1.5f));
  in.v = ll::test::round_bf16(ll::test::random_uniform(rng, nkv, -1.0f, 1.0f));
  in.out_ref.resize(nq);
  in.lse_ref.resize(size_t(c.h * c.n));
  ll::cpu::attention_forward(in.out_ref.data(), in.lse_ref.data(), in.q.data(), in.k.data(),
                             in.v.data(), c.n, c.h, c.hkv, c.hd, mask_of(c));
  return in;
}

// Runs `forward` (an emulated forward with attention_forward_tc_emulated's signature) in both
// fiber orders and checks it against the reference; returns the result.
template <typename Forward>
emu::ForwardResult check_forward(const Case& c, const Inputs& in, Forward forward) {
  const auto [fwd, fwd_rev] = run_both_orders([&] {
    return forward(to_bf16_bits(in.q), to_bf16_bits(in.k), to_bf16_bits(in.v), c.n, c.h, c.hkv,
                   c.hd, mask_of(c), true);
  });
  {
    INFO("forward out vs CPU reference");
    emu_util::check_bf16_close(fwd.out, in.out_ref, 1e-2, 1e-2, 1e-2);
  }
  {
    INFO("forward lse vs CPU reference");
    ll::test::check_close(fwd.lse, ll::test::to_double(in.lse_ref), 2e-4, 2e-5, 1e-5);
  }
  CHECK_MESSAGE(fwd_rev.out == fwd.out, "forward out differs with the reverse thread order");
  CHECK_MESSAGE(ll::test::same_bytes(fwd_rev.lse, fwd.lse),
                "forward lse differs with the reverse thread order");
  return fwd;
}

// Random dout, the CPU reference backward on `in` and its bf16-rounded out; runs `backward`
// (attention_backward_tc_emulated's signature) in both fiber orders and checks dq, dk, dv, and
// that both orders give the same bytes (dq only where `dq_deterministic`: atomic dQ sums in
// the order the threads arrive).
template <typename Backward>
void check_backward(const Case& c, const Inputs& in, std::mt19937_64& rng, Backward backward,
                    bool dq_deterministic = true) {
  const size_t nq = size_t(c.n * c.h * c.hd), nkv = size_t(c.n * c.hkv * c.hd);
  const ll::AttentionPattern mask = mask_of(c);
  const auto dout = ll::test::round_bf16(ll::test::random_uniform(rng, nq, -1.0f, 1.0f));
  const auto out = ll::test::round_bf16(in.out_ref);  // what the GPU backward reads (bf16)
  std::vector<float> dq(nq), dk(nkv), dv(nkv);
  ll::cpu::attention_backward(dq.data(), dk.data(), dv.data(), dout.data(), in.q.data(),
                              in.k.data(), in.v.data(), out.data(), in.lse_ref.data(), c.n, c.h,
                              c.hkv, c.hd, mask);
  const auto [bwd, bwd_rev] = run_both_orders([&] {
    return backward(to_bf16_bits(dout), to_bf16_bits(in.q), to_bf16_bits(in.k), to_bf16_bits(in.v),
                    to_bf16_bits(out), in.lse_ref, c.n, c.h, c.hkv, c.hd, mask);
  });
  check_grad("dq vs CPU reference", from_bf16_bits(bwd.dq), dq);
  check_grad("dk vs CPU reference", from_bf16_bits(bwd.dk), dk);
  check_grad("dv vs CPU reference", from_bf16_bits(bwd.dv), dv);
  if (dq_deterministic)
    CHECK_MESSAGE(bwd_rev.dq == bwd.dq, "dq differs with the reverse thread order");
  else
    check_grad("dq (reverse thread order) vs CPU reference", from_bf16_bits(bwd_rev.dq), dq);
  CHECK_MESSAGE(bwd_rev.dk == bwd.dk, "dk differs with the reverse thread order");
  CHECK_MESSAGE(bwd_rev.dv == bwd.dv, "dv differs with the reverse thread order");
}

// Which tensor-core kernels a case runs: the mma.sync ones (sm_80+) or the Hopper ones (sm_90a,
// no S2Roll), whose backward has a deterministic and an atomic-dQ launch sequence.
enum class Kernels { Sm80, Hopper, HopperAtomicDq };

inline void run_case(const Case& c, uint64_t seed, bool backward, Kernels kernels = Kernels::Sm80) {
  INFO("mode " << mode_name(c.mode) << " N " << c.n << " H " << c.h << " Hkv " << c.hkv << " hd "
               << c.hd << " G " << c.g << " seed " << seed
               << std::string(kernels == Kernels::Sm80     ? " (mma.sync kernels)"
                              : kernels == Kernels::Hopper ? " (Hopper kernels)"
                                                           : " (Hopper kernels, atomic dQ)"));
  std::mt19937_64 rng(seed);
  const Inputs in = make_inputs(c, rng);
  const bool hopper = kernels != Kernels::Sm80;
  const emu::ForwardResult fwd = check_forward(
      c, in, hopper ? emu::attention_forward_sm90_emulated : emu::attention_forward_tc_emulated);
  CHECK(fwd.launches.size() == 1);
  if (!backward) return;
  const bool atomic_dq = kernels == Kernels::HopperAtomicDq;
  check_backward(
      c, in, rng,
      [&](const auto&... args) {
        return hopper ? emu::attention_backward_sm90_emulated(args..., atomic_dq)
                      : emu::attention_backward_tc_emulated(args...);
      },
      !atomic_dq);
}

}  // namespace ll::test::emu_case
