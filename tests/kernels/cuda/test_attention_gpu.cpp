// CUDA tiled attention (kernels/cuda/attention.cuh) against the fp32 CPU reference
// (kernels/cpu/attention.h): dense, S2 and S2Roll; MHA, GQA and MQA; head dims 64 and 128;
// ragged N with G dividing N, not dividing N and G > N. Inputs are rounded to bf16 and the
// same values go to both. Outputs are poisoned with 0xFF bytes (bf16 and fp32 NaN) so an
// unwritten element fails. The backward is run twice and must give identical bytes.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "common/error.h"
#include "kernels/attention_pattern.h"
#include "kernels/cpu/attention.h"
#include "tests/gpu_skip.h"
#include "tests/kernels/attention_test_cases.h"
#include "tests/kernels/kernel_test_util.h"

#if defined(LL_HAVE_CUDA)
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/cuda_check.h"
#endif

namespace {

#if defined(LL_HAVE_CUDA)
using ll::test::mode_name;
using Case = ll::test::AttnCase;

// bf16 on the host as raw bits (round to nearest even), so the test needs no CUDA headers here.
uint16_t to_bf16_bits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if (std::isnan(x)) return 0x7FC0;
  u += 0x7FFF + ((u >> 16) & 1);
  return uint16_t(u >> 16);
}
float from_bf16_bits(uint16_t b) {
  const uint32_t u = uint32_t(b) << 16;
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}
std::vector<uint16_t> to_bf16(const std::vector<float>& v) {
  std::vector<uint16_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = to_bf16_bits(v[i]);
  return out;
}
std::vector<float> from_bf16(const std::vector<uint16_t>& v) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = from_bf16_bits(v[i]);
  return out;
}
std::vector<double> to_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }
double max_abs(const std::vector<float>& v) {
  double m = 0.0;
  for (float x : v) m = std::max(m, double(std::fabs(x)));
  return m;
}

// A device buffer of `bytes` bytes, freed on scope exit.
struct DeviceBuffer {
  void* ptr = nullptr;
  size_t bytes = 0;
  explicit DeviceBuffer(size_t n) : bytes(n) { LL_CUDA_CHECK(cudaMalloc(&ptr, n == 0 ? 1 : n)); }
  ~DeviceBuffer() { cudaFree(ptr); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr);
  }
  template <typename T>
  void upload(const std::vector<T>& v) {
    REQUIRE(v.size() * sizeof(T) == bytes);
    LL_CUDA_CHECK(cudaMemcpy(ptr, v.data(), bytes, cudaMemcpyHostToDevice));
  }
  template <typename T>
  std::vector<T> download() const {
    std::vector<T> v(bytes / sizeof(T));
    LL_CUDA_CHECK(cudaMemcpy(v.data(), ptr, bytes, cudaMemcpyDeviceToHost));
    return v;
  }
  void poison() { LL_CUDA_CHECK(cudaMemset(ptr, 0xFF, bytes)); }
};

void run_case(const Case& c, uint64_t seed) {
  INFO("mode " << mode_name(c.mode) << " N " << c.n << " H " << c.h << " Hkv " << c.hkv << " hd "
               << c.hd << " G " << c.g << " seed " << seed);
  std::mt19937_64 rng(seed);
  const int64_t n = c.n, h = c.h, hkv = c.hkv, hd = c.hd;
  const size_t nq = size_t(n * h * hd), nkv = size_t(n * hkv * hd);
  // Inputs rounded to bf16; the CPU reference sees exactly the values the GPU sees.
  const auto q_b = to_bf16(ll::test::random_uniform(rng, nq, -1.5f, 1.5f));
  const auto k_b = to_bf16(ll::test::random_uniform(rng, nkv, -1.5f, 1.5f));
  const auto v_b = to_bf16(ll::test::random_uniform(rng, nkv, -1.0f, 1.0f));
  const auto do_b = to_bf16(ll::test::random_uniform(rng, nq, -1.0f, 1.0f));
  const auto q = from_bf16(q_b), k = from_bf16(k_b), v = from_bf16(v_b), dout = from_bf16(do_b);
  const ll::AttentionPattern mask{c.mode, n, c.mode == ll::AttnMode::Dense ? 0 : c.g, h};

  std::vector<float> out_ref(nq), lse_ref(size_t(h * n));
  ll::cpu::attention_forward(out_ref.data(), lse_ref.data(), q.data(), k.data(), v.data(), n, h,
                             hkv, hd, mask);

  DeviceBuffer d_q(nq * 2), d_k(nkv * 2), d_v(nkv * 2), d_do(nq * 2), d_out(nq * 2);
  DeviceBuffer d_lse(size_t(h * n) * 4), d_dq(nq * 2), d_dk(nkv * 2), d_dv(nkv * 2);
  d_q.upload(q_b);
  d_k.upload(k_b);
  d_v.upload(v_b);
  d_do.upload(do_b);
  using bf = __nv_bfloat16;

  // Forward.
  d_out.poison();
  d_lse.poison();
  ll::cuda::attention_forward(d_out.as<bf>(), d_lse.as<float>(), d_q.as<bf>(), d_k.as<bf>(),
                              d_v.as<bf>(), n, h, hkv, hd, mask, nullptr);
  LL_CUDA_CHECK(cudaDeviceSynchronize());
  {
    const auto out = from_bf16(d_out.download<uint16_t>());
    const auto lse = d_lse.download<float>();
    INFO("forward out");
    ll::test::check_close(out, to_double(out_ref), 1e-2, 1e-2, 1e-2);
    INFO("forward lse");
    ll::test::check_close(lse, to_double(lse_ref), 1e-4, 1e-5, 1e-5);
  }

  // Backward: both sides get the reference forward's out (rounded to bf16) and lse.
  const auto out_b = to_bf16(out_ref);
  const auto out_r = from_bf16(out_b);
  std::vector<float> dq_ref(nq), dk_ref(nkv), dv_ref(nkv);
  ll::cpu::attention_backward(dq_ref.data(), dk_ref.data(), dv_ref.data(), dout.data(), q.data(),
                              k.data(), v.data(), out_r.data(), lse_ref.data(), n, h, hkv, hd,
                              mask);
  d_out.upload(out_b);
  d_lse.upload(lse_ref);
  std::vector<uint16_t> first[3];
  for (int run = 0; run < 2; ++run) {
    d_dq.poison();
    d_dk.poison();
    d_dv.poison();
    if (run == 0) {  // launcher-allocated scratch
      ll::cuda::attention_backward(d_dq.as<bf>(), d_dk.as<bf>(), d_dv.as<bf>(), d_do.as<bf>(),
                                   d_q.as<bf>(), d_k.as<bf>(), d_v.as<bf>(), d_out.as<bf>(),
                                   d_lse.as<float>(), n, h, hkv, hd, mask, nullptr, nullptr);
    } else {  // caller-provided scratch
      DeviceBuffer ws(ll::cuda::attention_backward_workspace_bytes(n, h));
      ws.poison();
      ll::cuda::attention_backward(d_dq.as<bf>(), d_dk.as<bf>(), d_dv.as<bf>(), d_do.as<bf>(),
                                   d_q.as<bf>(), d_k.as<bf>(), d_v.as<bf>(), d_out.as<bf>(),
                                   d_lse.as<float>(), n, h, hkv, hd, mask, ws.ptr, nullptr);
      LL_CUDA_CHECK(cudaDeviceSynchronize());
    }
    LL_CUDA_CHECK(cudaDeviceSynchronize());
    std::vector<uint16_t> got[3] = {d_dq.download<uint16_t>(), d_dk.download<uint16_t>(),
                                    d_dv.download<uint16_t>()};
    if (run == 0) {
      const std::vector<float>* refs[3] = {&dq_ref, &dk_ref, &dv_ref};
      const char* names[3] = {"dq", "dk", "dv"};
      for (int t = 0; t < 3; ++t) {
        INFO("backward " << names[t]);
        const double atol = 1e-2 * max_abs(*refs[t]) + 1e-6;
        ll::test::check_close(from_bf16(got[t]), to_double(*refs[t]), atol, 1e-2, 1e-2);
        first[t] = got[t];
      }
    } else {
      CHECK_MESSAGE(got[0] == first[0], "dq differs between two identical backward runs");
      CHECK_MESSAGE(got[1] == first[1], "dk differs between two identical backward runs");
      CHECK_MESSAGE(got[2] == first[2], "dv differs between two identical backward runs");
    }
  }
}
#endif

}  // namespace

TEST_CASE("cuda attention matches the CPU reference (dense, S2, S2Roll; GQA; hd 32/64/128)") {
  ll::test::require_gpu();
#if defined(LL_HAVE_CUDA)
  const auto seeds = ll::test::test_seeds();
  // (N, G): G dividing N, not dividing N, and G > N.
  const int64_t ng[][2] = {{1, 2},    {7, 2},    {7, 8},   {64, 16},   {64, 128},   {100, 20},
                           {100, 24}, {257, 64}, {257, 2}, {257, 512}, {1000, 250}, {1000, 96}};
  const int64_t heads[][2] = {{4, 2}, {8, 1}, {4, 4}};
  int index = 0;
  for (ll::AttnMode mode : {ll::AttnMode::Dense, ll::AttnMode::S2, ll::AttnMode::S2Roll}) {
    int64_t last_n = -1;
    for (const auto& p : ng) {
      // Dense ignores G: each N once.
      if (mode == ll::AttnMode::Dense && p[0] == last_n) continue;
      last_n = p[0];
      for (int64_t hd : {32, 64, 128}) {
        const auto& hh = heads[(index + hd / 32) % 3];
        const Case c{mode, p[0], hh[0], hh[1], hd, p[1]};
        run_case(c, seeds[size_t(index) % seeds.size()] + uint64_t(index) * 7919u);
        ++index;
      }
    }
  }
  // Every (H, Hkv) with every head dim on one S2 shape, N not a multiple of the tile.
  for (const auto& hh : heads)
    for (int64_t hd : {32, 64, 128})
      run_case(Case{ll::AttnMode::S2, 100, hh[0], hh[1], hd, 24}, seeds.back() + uint64_t(hd));
#endif
}

TEST_CASE("cuda attention rejects unsupported shapes and accepts N = 0") {
  ll::test::require_gpu();
#if defined(LL_HAVE_CUDA)
  using bf = __nv_bfloat16;
  DeviceBuffer buf(1 << 16);
  bf* p = buf.as<bf>();
  const ll::AttentionPattern dense{ll::AttnMode::Dense, 8, 0, 4};
  CHECK_THROWS_AS(ll::cuda::attention_forward(p, nullptr, p, p, p, 8, 4, 4, 96, dense, nullptr),
                  ll::Error);
  CHECK_THROWS_AS(ll::cuda::attention_forward(p, nullptr, p, p, p, 8, 4, 3, 64, dense, nullptr),
                  ll::Error);
  CHECK_THROWS_AS(ll::cuda::attention_forward(p, nullptr, p, p, p, 9, 4, 4, 64, dense, nullptr),
                  ll::Error);  // mask is for N = 8
  const ll::AttentionPattern odd{ll::AttnMode::S2, 8, 3, 4};
  CHECK_THROWS_AS(ll::cuda::attention_forward(p, nullptr, p, p, p, 8, 4, 4, 64, odd, nullptr),
                  ll::Error);
  const ll::AttentionPattern odd_heads{ll::AttnMode::S2Roll, 8, 4, 3};
  CHECK_THROWS_AS(ll::cuda::attention_forward(p, nullptr, p, p, p, 8, 3, 3, 64, odd_heads, nullptr),
                  ll::Error);
  CHECK_THROWS_AS(ll::cuda::attention_backward(p, p, p, p, p, p, p, p, nullptr, 8, 4, 4, 64, dense,
                                               nullptr, nullptr),
                  ll::Error);  // lse is required
  const ll::AttentionPattern empty{ll::AttnMode::S2, 0, 4, 4};
  ll::cuda::attention_forward(nullptr, nullptr, nullptr, nullptr, nullptr, 0, 4, 2, 128, empty,
                              nullptr);
  ll::cuda::attention_backward(nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr,
                               nullptr, nullptr, 0, 4, 2, 128, empty, nullptr, nullptr);
  LL_CUDA_CHECK(cudaDeviceSynchronize());
#endif
}
