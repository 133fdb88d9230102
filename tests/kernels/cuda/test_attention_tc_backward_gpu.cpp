// Tensor-core attention backward (attention_backward_tc, kernels/cuda/attention_tc.cuh) against
// the fp32 CPU reference (kernels/cpu/attention.h attention_backward) and the CUDA-core kernel
// (kernels/cuda/attention.cuh attention_backward) on the same bf16-rounded inputs: dense, S2,
// S2Roll (both halves of heads); MHA and GQA (H / Hkv 1, 2, 4, including S2Roll groups that
// straddle the shifted half); head dims 64 and 128; N around the 64-row tiles and G dividing N,
// not dividing N and G > N. lse comes from the CPU forward (and, in a second pass, out and lse
// from attention_forward_tc). Outputs are poisoned (0xFF bytes: bf16 NaN) so an unwritten
// element fails; two runs (workspace null, then caller-provided) must give identical bytes.
// Long sequences (N up to 65536) are checked against the CUDA-core backward. On a Hopper device
// attention_backward_tc runs the wgmma kernels for dense and S2 masks; there the mma.sync
// kernels (attention_backward_tc_sm80) are checked against the CPU reference as well.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
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
using ll::test::check_grad;
using ll::test::DeviceBuffer;
using ll::test::group_sizes;
using ll::test::mask_of;
using ll::test::mode_name;
using Case = ll::test::AttnCase;

struct Grads {
  std::vector<float> dq, dk, dv;        // values (bf16 on the GPU paths)
  std::vector<uint16_t> rdq, rdk, rdv;  // raw bf16 bits (GPU paths)
};

std::vector<uint16_t> raw_bits(const DeviceBuffer<bf16>& d) {
  std::vector<uint16_t> r(d.size());
  if (!r.empty())
    LL_CUDA_CHECK(cudaMemcpy(r.data(), d.get(), r.size() * 2, cudaMemcpyDeviceToHost));
  return r;
}

// Device copies of the backward's inputs.
struct DevInputs {
  DeviceBuffer<bf16> q, k, v, dout, out;
  DeviceBuffer<float> lse;
};

enum class Impl { Tc, TcWorkspace, TcSm80, TcAtomicDq, Simt };

Grads run_backward(const Case& c, const DevInputs& in, Impl impl) {
  const size_t nq = size_t(c.n * c.h * c.hd), nkv = size_t(c.n * c.hkv * c.hd);
  DeviceBuffer<bf16> dq(nq), dk(nkv), dv(nkv);
  dq.poison();
  dk.poison();
  dv.poison();
  const ll::AttentionPattern mask = mask_of(c);
  if (impl == Impl::Simt) {
    ll::cuda::attention_backward(dq.get(), dk.get(), dv.get(), in.dout.get(), in.q.get(),
                                 in.k.get(), in.v.get(), in.out.get(), in.lse.get(), c.n, c.h,
                                 c.hkv, c.hd, mask, nullptr, cudaStream_t(nullptr));
  } else if (impl == Impl::TcAtomicDq) {
    const size_t ws_bytes =
        ll::cuda::attention_backward_tc_atomic_dq_workspace_bytes(c.n, c.h, c.hd);
    DeviceBuffer<float> ws(ws_bytes / sizeof(float));
    ws.poison();  // D and the dQ accumulator are written before they are read
    ll::cuda::attention_backward_tc_atomic_dq(
        dq.get(), dk.get(), dv.get(), in.dout.get(), in.q.get(), in.k.get(), in.v.get(),
        in.out.get(), in.lse.get(), c.n, c.h, c.hkv, c.hd, mask, ws.get(), cudaStream_t(nullptr));
  } else {
    const size_t ws_bytes = ll::cuda::attention_backward_workspace_bytes(c.n, c.h);
    DeviceBuffer<float> ws(std::max<size_t>(ws_bytes / sizeof(float), 1));
    ws.poison();  // D is written before it is read
    const auto backward = impl == Impl::TcSm80 ? ll::cuda::attention_backward_tc_sm80
                                               : ll::cuda::attention_backward_tc;
    backward(dq.get(), dk.get(), dv.get(), in.dout.get(), in.q.get(), in.k.get(), in.v.get(),
             in.out.get(), in.lse.get(), c.n, c.h, c.hkv, c.hd, mask,
             impl == Impl::TcWorkspace ? ws.get() : nullptr, cudaStream_t(nullptr));
  }
  ll::test::device_sync();
  Grads g;
  g.dq = ll::test::download_bf16(dq);
  g.dk = ll::test::download_bf16(dk);
  g.dv = ll::test::download_bf16(dv);
  g.rdq = raw_bits(dq);
  g.rdk = raw_bits(dk);
  g.rdv = raw_bits(dv);
  return g;
}

void check_grads(const char* against, const Grads& got, const Grads& ref) {
  INFO("tensor-core backward vs " << std::string(against));
  check_grad("dq", got.dq, ref.dq);
  check_grad("dk", got.dk, ref.dk);
  check_grad("dv", got.dv, ref.dv);
}

// The atomic-dQ backward: close to `ref` (named `against`); dK and dV are the bytes of the
// deterministic backward `tc`.
void check_atomic_dq(const Case& c, const DevInputs& in, const Grads& tc, const char* against,
                     const Grads& ref) {
  INFO("atomic dQ");
  const Grads atomic = run_backward(c, in, Impl::TcAtomicDq);
  check_grads(against, atomic, ref);
  CHECK_MESSAGE(atomic.rdk == tc.rdk, "dk differs from the deterministic backward's");
  CHECK_MESSAGE(atomic.rdv == tc.rdv, "dv differs from the deterministic backward's");
}

void run_case(const Case& c, uint64_t seed) {
  INFO("mode " << mode_name(c.mode) << " N " << c.n << " H " << c.h << " Hkv " << c.hkv << " hd "
               << c.hd << " G " << c.g << " seed " << seed);
  std::mt19937_64 rng(seed);
  const size_t nq = size_t(c.n * c.h * c.hd), nkv = size_t(c.n * c.hkv * c.hd);
  const auto q = ll::test::round_bf16(ll::test::random_uniform(rng, nq, -1.5f, 1.5f));
  const auto k = ll::test::round_bf16(ll::test::random_uniform(rng, nkv, -1.5f, 1.5f));
  const auto v = ll::test::round_bf16(ll::test::random_uniform(rng, nkv, -1.0f, 1.0f));
  const auto dout = ll::test::round_bf16(ll::test::random_uniform(rng, nq, -1.0f, 1.0f));
  const ll::AttentionPattern mask = mask_of(c);

  // CPU forward on the rounded inputs; out rounded to bf16 (what the GPU backward reads).
  std::vector<float> out(nq), lse(size_t(c.h * c.n));
  ll::cpu::attention_forward(out.data(), lse.data(), q.data(), k.data(), v.data(), c.n, c.h, c.hkv,
                             c.hd, mask);
  out = ll::test::round_bf16(out);

  Grads ref;
  ref.dq.resize(nq);
  ref.dk.resize(nkv);
  ref.dv.resize(nkv);
  ll::cpu::attention_backward(ref.dq.data(), ref.dk.data(), ref.dv.data(), dout.data(), q.data(),
                              k.data(), v.data(), out.data(), lse.data(), c.n, c.h, c.hkv, c.hd,
                              mask);

  DevInputs in{ll::test::upload_bf16(q),    ll::test::upload_bf16(k),   ll::test::upload_bf16(v),
               ll::test::upload_bf16(dout), ll::test::upload_bf16(out), ll::test::upload(lse)};
  const Grads tc = run_backward(c, in, Impl::Tc);
  check_grads("CPU reference", tc, ref);
  check_grads("CUDA-core kernel", tc, run_backward(c, in, Impl::Simt));
  if (ll::cuda::attention_tc_uses_hopper(mask) && !ll::test::emulated_gpu())
    check_grads("CPU reference (the mma.sync kernels on this Hopper device)",
                run_backward(c, in, Impl::TcSm80), ref);

  // Deterministic, and the caller's workspace gives the same bytes as the allocated one.
  const Grads again = run_backward(c, in, Impl::TcWorkspace);
  CHECK_MESSAGE(again.rdq == tc.rdq, "dq differs between two identical runs");
  CHECK_MESSAGE(again.rdk == tc.rdk, "dk differs between two identical runs");
  CHECK_MESSAGE(again.rdv == tc.rdv, "dv differs between two identical runs");
  check_atomic_dq(c, in, tc, "CPU reference", ref);

  // End to end on the GPU: out and lse from attention_forward_tc.
  {
    INFO("out and lse from attention_forward_tc");
    DeviceBuffer<bf16> out_tc(nq);
    DeviceBuffer<float> lse_tc(size_t(c.h * c.n));
    ll::cuda::attention_forward_tc(out_tc.get(), lse_tc.get(), in.q.get(), in.k.get(), in.v.get(),
                                   c.n, c.h, c.hkv, c.hd, mask, cudaStream_t(nullptr));
    ll::test::device_sync();
    DevInputs in_tc{ll::test::upload_bf16(q),    ll::test::upload_bf16(k), ll::test::upload_bf16(v),
                    ll::test::upload_bf16(dout), std::move(out_tc),        std::move(lse_tc)};
    check_grads("CPU reference (GPU forward)", run_backward(c, in_tc, Impl::Tc), ref);
  }
}

}  // namespace
#endif

TEST_CASE("tensor-core attention backward matches the CPU reference and the CUDA-core kernel") {
  ll::test::require_gpu();
#if defined(LL_HAVE_CUDA)
  const auto seeds = ll::test::test_seeds();
  // (H, Hkv): MHA, GQA 2 and 4; H >= 2 and even so both S2 halves exist.
  const int64_t heads[][2] = {{4, 4}, {4, 2}, {8, 2}};
  const int64_t ns[] = {1, 7, 64, 65, 257, 1000};
  int index = 0;
  for (ll::AttnMode mode : {ll::AttnMode::Dense, ll::AttnMode::S2, ll::AttnMode::S2Roll}) {
    for (int64_t n : ns) {
      if (ll::test::emulated_gpu() && n > 257) continue;  // the emulator: minutes per case
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
  // Every (H, Hkv) with both head dims on shapes ragged in the 64-row tiles, plus GQA groups of
  // 4 over H = 4 (Hkv = 1): for S2Roll the group straddles the shifted half, so one dK/dV block
  // serves query heads with different visit spaces.
  for (const auto& hh : heads)
    for (int64_t hd : {64, 128})
      for (ll::AttnMode mode : {ll::AttnMode::S2, ll::AttnMode::S2Roll})
        run_case(Case{mode, 200, hh[0], hh[1], hd, 72}, seeds.back() + uint64_t(hd + hh[0]));
  for (int64_t hd : {64, 128})
    for (ll::AttnMode mode : {ll::AttnMode::Dense, ll::AttnMode::S2, ll::AttnMode::S2Roll})
      for (int64_t n : {65, 300})
        run_case(Case{mode, n, 4, 1, hd, 40}, seeds.front() + uint64_t(hd * 3 + n));
#endif
}

// Long sequences (N up to 65536, where 32-bit index products and the visit arithmetic of the
// shifted half are at their largest): against the CUDA-core backward on the same inputs (the
// CPU reference would take minutes), out and lse from the tensor-core forward, and
// bit-for-bit determinism.
TEST_CASE(
    "tensor-core attention backward: long sequences (N 16384 .. 65536) vs the CUDA-core kernel") {
  ll::test::require_gpu();
#if defined(LL_HAVE_CUDA)
  if (ll::test::emulated_gpu()) {
    MESSAGE("skipped on the SIMT emulator (LL_CUDA_BACKEND_EMULATED): too long there");
    return;
  }
  const auto seeds = ll::test::test_seeds();
  const Case cases[] = {{ll::AttnMode::S2, 65536, 4, 2, 128, 16384},
                        {ll::AttnMode::S2, 65536, 4, 2, 64, 16384},
                        {ll::AttnMode::S2Roll, 65536, 4, 2, 128, 16384},
                        {ll::AttnMode::S2, 40000, 4, 4, 128, 10002},  // ragged last segments
                        {ll::AttnMode::Dense, 16384, 2, 1, 128, 0}};
  for (const Case& c : cases) {
    const uint64_t seed = seeds.back() + uint64_t(c.n + c.hd + int64_t(c.mode));
    INFO("mode " << mode_name(c.mode) << " N " << c.n << " H " << c.h << " Hkv " << c.hkv << " hd "
                 << c.hd << " G " << c.g << " seed " << seed);
    std::mt19937_64 rng(seed);
    const size_t nq = size_t(c.n * c.h * c.hd), nkv = size_t(c.n * c.hkv * c.hd);
    const auto q = ll::test::round_bf16(ll::test::random_uniform(rng, nq, -1.5f, 1.5f));
    const auto k = ll::test::round_bf16(ll::test::random_uniform(rng, nkv, -1.5f, 1.5f));
    const auto v = ll::test::round_bf16(ll::test::random_uniform(rng, nkv, -1.0f, 1.0f));
    const auto dout = ll::test::round_bf16(ll::test::random_uniform(rng, nq, -1.0f, 1.0f));
    DevInputs in{ll::test::upload_bf16(q), ll::test::upload_bf16(k),
                 ll::test::upload_bf16(v), ll::test::upload_bf16(dout),
                 DeviceBuffer<bf16>(nq),   DeviceBuffer<float>(size_t(c.h * c.n))};
    ll::cuda::attention_forward_tc(in.out.get(), in.lse.get(), in.q.get(), in.k.get(), in.v.get(),
                                   c.n, c.h, c.hkv, c.hd, mask_of(c), cudaStream_t(nullptr));
    ll::test::device_sync();
    const Grads tc = run_backward(c, in, Impl::Tc);
    const Grads simt = run_backward(c, in, Impl::Simt);
    check_grads("CUDA-core kernel", tc, simt);
    check_atomic_dq(c, in, tc, "CUDA-core kernel", simt);
    const Grads again = run_backward(c, in, Impl::TcWorkspace);
    CHECK_MESSAGE(again.rdq == tc.rdq, "dq differs between two identical runs");
    CHECK_MESSAGE(again.rdk == tc.rdk, "dk differs between two identical runs");
    CHECK_MESSAGE(again.rdv == tc.rdv, "dv differs between two identical runs");
  }
#endif
}

TEST_CASE("tensor-core attention backward rejects unsupported shapes and accepts N = 0") {
  ll::test::require_gpu();
#if defined(LL_HAVE_CUDA)
  using ll::cuda::attention_backward_tc;
  DeviceBuffer<bf16> buf(1 << 15);
  DeviceBuffer<float> fbuf(1 << 10);
  bf16* p = buf.get();
  float* l = fbuf.get();
  const ll::AttentionPattern dense{ll::AttnMode::Dense, 8, 0, 4};
  auto call = [&](bf16* dq, bf16* k, float* lse, int64_t n, int64_t h, int64_t hkv, int64_t hd,
                  const ll::AttentionPattern& m, void* ws) {
    attention_backward_tc(dq, p, p, p, p, k, p, p, lse, n, h, hkv, hd, m, ws, nullptr);
  };
  CHECK_THROWS_AS(call(p, p, l, 8, 4, 4, 32, dense, nullptr), ll::Error);  // hd 32: CUDA-core
  CHECK_THROWS_AS(call(p, p, l, 8, 4, 4, 96, dense, nullptr), ll::Error);
  CHECK_THROWS_AS(call(p, p, l, 8, 4, 3, 64, dense, nullptr), ll::Error);
  CHECK_THROWS_AS(call(p, p, l, 9, 4, 4, 64, dense, nullptr), ll::Error);  // mask for N = 8
  const ll::AttentionPattern odd{ll::AttnMode::S2, 8, 3, 4};
  CHECK_THROWS_AS(call(p, p, l, 8, 4, 4, 64, odd, nullptr), ll::Error);
  const ll::AttentionPattern odd_heads{ll::AttnMode::S2Roll, 8, 4, 3};
  CHECK_THROWS_AS(call(p, p, l, 8, 3, 3, 64, odd_heads, nullptr), ll::Error);
  CHECK_THROWS_AS(call(p + 1, p, l, 8, 4, 4, 64, dense, nullptr), ll::Error);    // dq unaligned
  CHECK_THROWS_AS(call(p, p + 4, l, 8, 4, 4, 64, dense, nullptr), ll::Error);    // k unaligned
  CHECK_THROWS_AS(call(p, p, nullptr, 8, 4, 4, 64, dense, nullptr), ll::Error);  // lse required
  CHECK_THROWS_AS(call(p, p, l, 8, 4, 4, 64, dense, reinterpret_cast<char*>(l) + 2), ll::Error);
  const ll::AttentionPattern empty{ll::AttnMode::S2, 0, 4, 4};
  attention_backward_tc(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                        nullptr, 0, 4, 2, 128, empty, nullptr, nullptr);
  ll::test::device_sync();
#endif
}
