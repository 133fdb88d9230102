// Activation offload on the CUDA backend: the cases every backend passes
// (tests/kernels/backend_offload_cases.h; the CPU backend runs them in
// tests/kernels/test_backend_offload.cpp), host tensors pinned, and the copy stream's order.
// In the emulated build the fake runtime's streams are lazy (tests/cuda_emu/fake), so these
// also show a copy not running before it is waited for, what a missing wait_copy would do, and
// the error for freeing a tensor a copy still reads.
#include <doctest/doctest.h>

#include "tests/gpu_skip.h"

#if defined(LL_HAVE_CUDA)
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_check.h"
#include "tests/kernels/backend_offload_cases.h"
#if defined(LL_CUDA_BACKEND_EMULATED)
#include "tests/cuda_emu/fake/fake_cuda_runtime.h"
#endif

namespace {

using namespace ll;
namespace cases = ll::test::offload_cases;
using ll::test::contains;
using ll::test::error_of;
using ll::test::get;
using ll::test::put;

}  // namespace

TEST_CASE("cuda backend: allocate_host counts host bytes apart from backend memory") {
  ll::test::require_gpu();
  CudaBackend b;
  cases::host_memory_counted_apart(b);
}

TEST_CASE("cuda backend: allocate_host memory is pinned") {
  ll::test::require_gpu();
  CudaBackend b;
  OwnedTensor h = b.allocate_host({1000}, DType::BF16);
  cudaPointerAttributes attr{};
  LL_CUDA_CHECK(cudaPointerGetAttributes(&attr, h->data));
  CHECK(attr.type == cudaMemoryTypeHost);
#if defined(LL_CUDA_BACKEND_EMULATED)
  const size_t pinned = ll_emu_pinned_bytes();
  CHECK(pinned >= 2000);
  h = OwnedTensor{};
  CHECK(ll_emu_pinned_bytes() == pinned - 2000);
#endif
}

TEST_CASE("cuda backend: copy_async round trip device -> host -> device is bit-exact") {
  ll::test::require_gpu();
  CudaBackend b;
  cases::round_trip_bit_exact(b);
}

TEST_CASE("cuda backend: copy_async copies what the ops queued before it wrote") {
  ll::test::require_gpu();
  CudaBackend b;
  cases::copy_async_after_queued_ops(b);
}

TEST_CASE("cuda backend: ops queued after wait_copy see the copy done") {
  ll::test::require_gpu();
  CudaBackend b;
  cases::wait_copy_orders_later_ops(b);
}

TEST_CASE("cuda backend: a ticket waited twice or never handed out is an error") {
  ll::test::require_gpu();
  CudaBackend b;
  cases::misuse_is_an_error(b);
  // Pageable memory is neither kind copy_async takes.
  std::vector<float> pageable(4);
  const Tensor view{pageable.data(), DType::F32, {4}};
  OwnedTensor src = b.allocate({4}, DType::F32);
  CHECK(contains(error_of([&] { b.copy_async(view, *src); }),
                 "neither backend memory nor allocate_host memory"));
}

TEST_CASE("cuda backend: offload copies overlap a stream of compute and stay in order") {
  ll::test::require_gpu();
  CudaBackend b;
  // A forward-and-backward pattern: each layer's input goes out while the next layer computes,
  // and comes back one layer ahead of its backward, with two device buffers in turn.
  std::mt19937_64 rng(11);
  const int64_t layers = 6, n = ll::test::emulated_gpu() ? 4096 : int64_t(1) << 20;
  std::vector<OwnedTensor> host;
  std::vector<std::vector<float>> expect;
  OwnedTensor x = put(b, {n}, DType::BF16, cases::values(rng, size_t(n), DType::BF16, false));
  OwnedTensor delta = put(b, {n}, DType::BF16, cases::values(rng, size_t(n), DType::BF16, false));
  std::vector<CopyTicket> out;
  for (int64_t l = 0; l < layers; ++l) {
    expect.push_back(get(b, x));
    host.push_back(b.allocate_host({n}, DType::BF16));
    out.push_back(b.copy_async(*host.back(), *x));
    b.wait_copy(out.back());  // before x is written: the next layer's output goes over it
    b.add_inplace(*x, *delta);
  }
  OwnedTensor buf[2] = {b.allocate({n}, DType::BF16), b.allocate({n}, DType::BF16)};
  CopyTicket in = b.copy_async(*buf[(layers - 1) % 2], *host[layers - 1]);
  for (int64_t l = layers - 1; l >= 0; --l) {
    b.wait_copy(in);
    if (l > 0) in = b.copy_async(*buf[(l - 1) % 2], *host[l - 1]);  // one layer ahead
    INFO("layer " << l);
    OwnedTensor grad = b.allocate({n}, DType::BF16);
    b.copy(*grad, *buf[l % 2]);  // the layer's backward reads its input
    CHECK(cases::same_bits(get(b, grad), expect[size_t(l)]));
  }
}

#if defined(LL_CUDA_BACKEND_EMULATED)
TEST_CASE("emulated cuda backend: a copy waits on the copy stream until something orders it") {
  ll::test::require_gpu();
  CudaBackend b;
  std::mt19937_64 rng(3);
  const int64_t n = 1000;
  OwnedTensor src = put(b, {n}, DType::F32, cases::values(rng, size_t(n), DType::F32, false));
  const std::vector<float> v = get(b, src);
  OwnedTensor host = b.allocate_host({n}, DType::F32);
  const CopyTicket t = b.copy_async(*host, *src);
  // Nothing waited for the copy: the host tensor still holds its poison (0xFF bytes).
  std::vector<unsigned char> poison(size_t(n) * 4, 0xff);
  CHECK(std::memcmp(host->data, poison.data(), poison.size()) == 0);
  b.wait_copy(t);  // the compute stream waits for it (the emulator runs it now)
  b.synchronize();
  CHECK(cases::same_bits(cases::host_values(host), v));
}

TEST_CASE("emulated cuda backend: without wait_copy the copies race the compute") {
  ll::test::require_gpu();
  CudaBackend b;
  std::mt19937_64 rng(5);
  const int64_t n = 1000;
  OwnedTensor src = put(b, {n}, DType::BF16, cases::values(rng, size_t(n), DType::BF16, false));
  const std::vector<float> v = get(b, src);
  // Out: overwriting the source before wait_copy; the copy reads the new values.
  OwnedTensor host = b.allocate_host({n}, DType::BF16);
  const CopyTicket out = b.copy_async(*host, *src);
  b.add_inplace(*src, *src);  // a kernel: it runs now, before the queued copy
  b.synchronize();
  std::vector<float> twice = v;
  for (float& x : twice) x *= 2.0f;  // exact in bf16
  CHECK(cases::same_bits(cases::host_values(host), twice));
  b.wait_copy(out);
  // Back: reading the destination before wait_copy; the kernel sees the poison.
  OwnedTensor back = put(b, {n}, DType::BF16, ll::test::poisoned(size_t(n)));
  const CopyTicket in = b.copy_async(*back, *host);
  OwnedTensor sum = put(b, {n}, DType::BF16, std::vector<float>(size_t(n), 0.0f));
  b.add_inplace(*sum, *back);
  for (float x : get(b, sum)) REQUIRE(std::isnan(x));
  b.wait_copy(in);
  CHECK(cases::same_bits(get(b, back), twice));
  // A copy over the source on the compute stream (not a kernel) is caught as it is issued.
  const CopyTicket again = b.copy_async(*host, *back);
  CHECK(contains(error_of([&] { b.copy(*back, *src); }), "no event between them"));
  b.wait_copy(again);
  b.copy(*back, *src);  // in order now
  b.synchronize();
}

TEST_CASE("emulated cuda backend: freeing a tensor a copy still reads is an error") {
  ll::test::require_gpu();
  CudaBackend b;
  OwnedTensor host = b.allocate_host({256}, DType::F32);
  OwnedTensor src = b.allocate({256}, DType::F32);
  b.fill_zero(*src);
  const CopyTicket t = b.copy_async(*host, *src);
  src = OwnedTensor{};  // freed stream-ordered on the compute stream, which never waited
  const std::string e = error_of([&] { b.synchronize(); });
  CHECK(contains(e, "cudaFreeAsync"));
  CHECK(contains(e, "still reads"));
  b.wait_copy(t);
  b.synchronize();  // reported once
  std::vector<float> zeros(256, 0.0f);
  CHECK(cases::same_bits(cases::host_values(host), zeros));  // the copy ran before the free
}

TEST_CASE("emulated cuda backend: pinning more host memory than there is names the bytes") {
  ll::test::require_gpu();
  CudaBackend b;
  const std::string e = error_of([&] { b.allocate_host({int64_t(1) << 37}, DType::F32); });
  CHECK(contains(e, "could not pin 549755813888 bytes"));
  CHECK(b.memory().host_in_use == 0);
}
#endif

#else
TEST_CASE("cuda backend offload (skipped)") { ll::test::require_gpu(); }
#endif
