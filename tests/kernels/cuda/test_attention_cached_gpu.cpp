// CUDA cached (decode) attention (kernels/cuda/attention_cached.cuh) against the fp32 CPU
// reference (kernels/cpu/attention.h attention_forward_cached): n = 1 decode and n > 1 chunks,
// past 0 (the tiled prefill path) to 100k cached keys (several key splits, splits past a
// query's last key), MHA, GQA, MQA and groups wider than one pass of 8 heads; head dims 32,
// 64, 128. Inputs are rounded to bf16 and the same values go to both sides; outputs are
// poisoned with 0xFF bytes (bf16 NaN) so an unwritten element fails; a second run with a
// caller-provided (poisoned) workspace must give identical bytes. Then the same op through
// the CudaBackend against the CpuBackend, reading a larger cache through row views.
#include <doctest/doctest.h>

#include "tests/gpu_skip.h"

#if defined(LL_HAVE_CUDA)
#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "common/error.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/attention_cached.cuh"
#include "kernels/cuda/cuda_backend.h"
#include "tests/kernels/cuda/gpu_test_util.h"
#include "tests/kernels/kernel_test_util.h"

namespace {

using ll::test::bf16;
using ll::test::DeviceBuffer;

double max_abs(const std::vector<float>& v) {
  double m = 0.0;
  for (float x : v) m = std::max(m, double(std::fabs(x)));
  return m;
}

struct Case {
  int64_t past, n, h, hkv, hd;
};

void run_case(const Case& c, uint64_t seed) {
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

  const auto d_q = ll::test::upload_bf16(q), d_k = ll::test::upload_bf16(k),
             d_v = ll::test::upload_bf16(v);
  DeviceBuffer<bf16> d_out(nq);
  d_out.poison();
  ll::cuda::attention_forward_cached(d_out.get(), d_q.get(), d_k.get(), d_v.get(), c.n, c.past, c.h,
                                     c.hkv, c.hd, nullptr, nullptr);
  ll::test::device_sync();
  const std::vector<float> out = ll::test::download_bf16(d_out);
  // Long caches average many values: the tolerance follows the output's scale.
  ll::test::check_close(out, ll::test::to_double(ref), 1e-2 * max_abs(ref) + 1e-6, 1e-2, 1e-2);

  // Caller-provided workspace, poisoned: the same bytes (deterministic, workspace overwritten).
  const size_t ws_bytes =
      ll::cuda::attention_forward_cached_workspace_bytes(c.n, c.past, c.h, c.hkv, c.hd);
  DeviceBuffer<float> ws((ws_bytes + 3) / 4);
  ws.poison();
  DeviceBuffer<bf16> d_out2(nq);
  d_out2.poison();
  ll::cuda::attention_forward_cached(d_out2.get(), d_q.get(), d_k.get(), d_v.get(), c.n, c.past,
                                     c.h, c.hkv, c.hd, ws.get(), nullptr);
  ll::test::device_sync();
  CHECK_MESSAGE(ll::test::same_bytes(ll::test::download(d_out2), ll::test::download(d_out)),
                "two runs of the same cached attention differ");
}

}  // namespace
#endif

TEST_CASE("cuda cached attention matches the CPU reference (decode, chunks, GQA, hd 32/64/128)") {
  ll::test::require_gpu();
#if defined(LL_HAVE_CUDA)
  const auto seeds = ll::test::test_seeds();
  // (past, n): decode at several cache lengths (one split up to many), prefill from empty
  // (tiled path), chunks after a cache, and a chunk whose early queries end before the last
  // key splits (1, 600).
  const int64_t pn[][2] = {{0, 1},    {0, 37}, {1, 1},     {37, 1},  {300, 1},
                           {5000, 1}, {63, 5}, {200, 100}, {1, 600}, {4096, 16}};
  const int64_t heads[][2] = {{4, 4}, {8, 2}, {16, 1}, {12, 4}, {32, 32}};
  int index = 0;
  for (const auto& p : pn) {
    for (int64_t hd : {32, 64, 128}) {
      const auto& hh = heads[size_t(index) % 5];
      if (ll::test::emulated_gpu() && p[0] + p[1] > 1000) {  // the emulator: minutes each
        MESSAGE("skipped on the SIMT emulator: past " << p[0] << " n " << p[1]);
        ++index;
        continue;
      }
      run_case(Case{p[0], p[1], hh[0], hh[1], hd},
               seeds[size_t(index) % seeds.size()] + uint64_t(index) * 7919u);
      ++index;
    }
  }
  // Every head layout on a long decode; then the 100k-token cache the paper targets.
  if (ll::test::emulated_gpu()) {
    MESSAGE("long caches (3000 .. 100000 keys) skipped on the SIMT emulator");
    return;
  }
  for (const auto& hh : heads) run_case(Case{3000, 1, hh[0], hh[1], 128}, seeds.back() + 1);
  run_case(Case{100000, 1, 8, 2, 128}, seeds.back() + 2);
  run_case(Case{20000, 3, 4, 4, 64}, seeds.back() + 3);
#endif
}

TEST_CASE("cuda cached attention rejects bad arguments and accepts n = 0") {
  ll::test::require_gpu();
#if defined(LL_HAVE_CUDA)
  DeviceBuffer<bf16> buf(1 << 16);
  bf16* p = buf.get();
  CHECK_THROWS_AS(ll::cuda::attention_forward_cached(p, p, p, p, 1, 4, 4, 4, 96, nullptr, nullptr),
                  ll::Error);  // head dim
  CHECK_THROWS_AS(ll::cuda::attention_forward_cached(p, p, p, p, 1, 4, 4, 3, 64, nullptr, nullptr),
                  ll::Error);  // heads do not split into kv groups
  CHECK_THROWS_AS(ll::cuda::attention_forward_cached(p, p, p, p, 1, -1, 4, 4, 64, nullptr, nullptr),
                  ll::Error);  // negative past
  CHECK_THROWS_AS(
      ll::cuda::attention_forward_cached(p, p + 1, p, p, 1, 4, 4, 4, 64, nullptr, nullptr),
      ll::Error);  // misaligned
  ll::cuda::attention_forward_cached(nullptr, nullptr, nullptr, nullptr, 0, 10, 4, 2, 128, nullptr,
                                     nullptr);
  ll::test::device_sync();
#endif
}

TEST_CASE("CudaBackend::attention_forward_cached matches the CPU backend on cache views") {
  ll::test::require_gpu();
#if defined(LL_HAVE_CUDA)
  ll::CpuBackend cpu;
  ll::CudaBackend gpu;
  const int64_t h = 8, hkv = 2, hd = 64, capacity = 4000;
  std::mt19937_64 rng(ll::test::test_seeds().back());
  const auto k_host =
      ll::test::round_bf16(ll::test::random_uniform(rng, size_t(capacity * hkv * hd), -1.5f, 1.5f));
  const auto v_host =
      ll::test::round_bf16(ll::test::random_uniform(rng, size_t(capacity * hkv * hd)));
  auto put = [](ll::Backend& b, std::vector<int64_t> shape, const std::vector<float>& host) {
    ll::OwnedTensor t = b.allocate(std::move(shape), b.activation_dtype());
    b.upload_f32(*t, host.data());
    return t;
  };
  // The cache as the model holds it, [capacity, Hkv*hd]; attention reads its first rows.
  const ll::OwnedTensor k_cpu = put(cpu, {capacity, hkv * hd}, k_host),
                        v_cpu = put(cpu, {capacity, hkv * hd}, v_host);
  const ll::OwnedTensor k_gpu = put(gpu, {capacity, hkv * hd}, k_host),
                        v_gpu = put(gpu, {capacity, hkv * hd}, v_host);
  for (const auto& [past, n] : std::vector<std::pair<int64_t, int64_t>>{
           {0, 1}, {0, 20}, {50, 1}, {3000, 1}, {50, 7}, {3900, 100}}) {
    INFO("past " << past << " n " << n);
    const auto q_host =
        ll::test::round_bf16(ll::test::random_uniform(rng, size_t(n * h * hd), -1.5f, 1.5f));
    const ll::OwnedTensor q_cpu = put(cpu, {n, h, hd}, q_host),
                          q_gpu = put(gpu, {n, h, hd}, q_host);
    const ll::OwnedTensor o_cpu = cpu.allocate({n, h, hd}, ll::DType::F32);
    const ll::OwnedTensor o_gpu = gpu.allocate({n, h, hd}, ll::DType::BF16);
    gpu.upload_f32(*o_gpu, ll::test::poisoned(size_t(n * h * hd)).data());
    cpu.attention_forward_cached(*o_cpu, *q_cpu, ll::reshaped(*k_cpu, {past + n, hkv, hd}),
                                 ll::reshaped(*v_cpu, {past + n, hkv, hd}), past);
    gpu.attention_forward_cached(*o_gpu, *q_gpu, ll::reshaped(*k_gpu, {past + n, hkv, hd}),
                                 ll::reshaped(*v_gpu, {past + n, hkv, hd}), past);
    std::vector<float> ref(size_t(n * h * hd)), out(size_t(n * h * hd));
    cpu.download_f32(ref.data(), *o_cpu);
    gpu.download_f32(out.data(), *o_gpu);
    ll::test::check_close(out, ll::test::to_double(ref), 1e-2 * max_abs(ref) + 1e-6, 1e-2, 1e-2);
  }
  // Shapes that do not fit the call are refused before any launch.
  const ll::OwnedTensor q1 = gpu.allocate({1, h, hd}, ll::DType::BF16);
  const ll::OwnedTensor o1 = gpu.allocate({1, h, hd}, ll::DType::BF16);
  CHECK_THROWS_AS(gpu.attention_forward_cached(*o1, *q1, ll::reshaped(*k_gpu, {10, hkv, hd}),
                                               ll::reshaped(*v_gpu, {10, hkv, hd}), 10),
                  ll::Error);  // past + n = 11 rows expected
#endif
}
