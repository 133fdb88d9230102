#pragma once
// Activation offload through the Backend interface (allocate_host, copy_async, wait_copy),
// shared by test_backend_offload.cpp (the CPU backend) and cuda/test_backend_offload_gpu.cpp
// (the CUDA backend; on a GPU and in the emulated build, whose lazy streams make a missing
// wait visible).
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "kernels/backend.h"
#include "tests/kernels/backend_test_util.h"
#include "tests/kernels/kernel_test_util.h"

namespace ll::test::offload_cases {

// The dtypes a backend stores tensors in: its activation dtype and F32.
inline std::vector<DType> dtypes(const Backend& b) {
  if (b.activation_dtype() == DType::F32) return {DType::F32};
  return {b.activation_dtype(), DType::F32};
}

// Values exactly representable in dtype (bf16-rounded for BF16), with the awkward ones first:
// signed zero, infinities, a NaN, the smallest normal and a subnormal (with `special`).
inline std::vector<float> values(std::mt19937_64& rng, size_t n, DType dtype,
                                 bool with_special = true) {
  std::vector<float> v = random_uniform(rng, n, -4.0f, 4.0f);
  const float special[] = {-0.0f,
                           std::numeric_limits<float>::infinity(),
                           -std::numeric_limits<float>::infinity(),
                           std::numeric_limits<float>::quiet_NaN(),
                           std::numeric_limits<float>::min(),
                           std::numeric_limits<float>::min() / 8};
  for (size_t i = 0; with_special && i < n && i < std::size(special); ++i) v[i] = special[i];
  if (dtype != DType::BF16) return v;
  for (float& x : v) {  // round to nearest even at bf16 (NaN stays a quiet NaN)
    uint32_t u;
    std::memcpy(&u, &x, 4);
    if ((u & 0x7fffffffu) <= 0x7f800000u) u += 0x7fffu + ((u >> 16) & 1u);
    u &= 0xffff0000u;
    std::memcpy(&x, &u, 4);
  }
  return v;
}

// a and b hold the same values bit for bit (NaN payloads included).
inline bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// The host tensor's contents (read directly: it is host memory) as fp32.
inline std::vector<float> host_values(const OwnedTensor& h) {
  const size_t n = size_t(h->numel());
  std::vector<float> v(n);
  if (h->dtype == DType::F32) {
    std::memcpy(v.data(), h->data, n * 4);
    return v;
  }
  REQUIRE(h->dtype == DType::BF16);
  const uint16_t* bits = static_cast<const uint16_t*>(h->data);
  for (size_t i = 0; i < n; ++i) {
    const uint32_t u = uint32_t(bits[i]) << 16;
    std::memcpy(&v[i], &u, 4);
  }
  return v;
}

// allocate_host counts its bytes in host_in_use / host_peak, never in in_use / peak.
inline void host_memory_counted_apart(Backend& b) {
  b.reset_peak();
  const BackendMemory before = b.memory();
  CHECK(before.host_peak == before.host_in_use);
  {
    OwnedTensor h = b.allocate_host({3, 5}, DType::F32);
    OwnedTensor h2 = b.allocate_host({7}, b.activation_dtype());
    const int64_t bytes = 60 + 7 * int64_t(dtype_size(b.activation_dtype()));
    const BackendMemory m = b.memory();
    CHECK(m.host_in_use == before.host_in_use + bytes);
    CHECK(m.host_peak == m.host_in_use);
    CHECK(m.in_use == before.in_use);
    CHECK(m.peak == before.peak);
  }
  const BackendMemory after = b.memory();
  CHECK(after.host_in_use == before.host_in_use);
  CHECK(after.host_peak > after.host_in_use);  // the peak stays until reset_peak
  b.reset_peak();
  CHECK(b.memory().host_peak == before.host_in_use);
}

// Device -> host -> device, each copy waited for: the same bits at every stop.
inline void round_trip_bit_exact(Backend& b) {
  for (uint64_t seed : test_seeds()) {
    std::mt19937_64 rng(seed);
    for (DType dtype : dtypes(b)) {
      for (int64_t n : {int64_t(1), int64_t(1000), int64_t(1) << 16}) {
        INFO(dtype_name(dtype) << " n " << n << " seed " << seed);
        OwnedTensor src = put(b, {n}, dtype, values(rng, size_t(n), dtype));
        const std::vector<float> v = get(b, src);  // what the backend holds, bit for bit
        OwnedTensor host = b.allocate_host({n}, dtype);
        b.wait_copy(b.copy_async(*host, *src));
        OwnedTensor back = put(b, {n}, dtype, poisoned(size_t(n)));
        b.wait_copy(b.copy_async(*back, *host));
        CHECK(same_bits(get(b, back), v));
        b.synchronize();  // the host reads the host tensor itself
        CHECK(same_bits(host_values(host), v));
      }
    }
  }
}

// copy_async copies what the ops queued before it wrote (the copy stream waits for them).
inline void copy_async_after_queued_ops(Backend& b) {
  std::mt19937_64 rng(9);
  const int64_t n = 777;
  const DType dtype = b.activation_dtype();
  OwnedTensor src = put(b, {n}, dtype, values(rng, size_t(n), dtype));
  const std::vector<float> v = get(b, src);
  OwnedTensor x = put(b, {n}, dtype, poisoned(size_t(n)));
  OwnedTensor host = b.allocate_host({n}, dtype);
  b.copy(*x, *src);  // queued, not waited for by the host
  b.wait_copy(b.copy_async(*host, *x));
  b.synchronize();
  CHECK(same_bits(host_values(host), v));
}

// After wait_copy, ops queued later see the copy done: a source overwritten after the wait
// leaves the host copy holding the old values, and on the way back an op reads the copy.
inline void wait_copy_orders_later_ops(Backend& b) {
  std::mt19937_64 rng(7);
  const int64_t n = 4099;
  const DType dtype = b.activation_dtype();
  const std::vector<float> other = values(rng, size_t(n), dtype);
  OwnedTensor src = put(b, {n}, dtype, values(rng, size_t(n), dtype));
  const std::vector<float> v = get(b, src);
  OwnedTensor host = b.allocate_host({n}, dtype);
  const CopyTicket out = b.copy_async(*host, *src);
  b.wait_copy(out);
  b.upload_f32(*src, other.data());  // the source is free again: the next layer's input
  b.fill_zero(*src);
  OwnedTensor back = put(b, {n}, dtype, poisoned(size_t(n)));
  const CopyTicket in = b.copy_async(*back, *host);
  b.wait_copy(in);
  OwnedTensor next = b.allocate({n}, dtype);
  b.copy(*next, *back);  // an op reading what the copy brought back
  CHECK(same_bits(get(b, next), v));
  CHECK(same_bits(get(b, back), v));
  b.synchronize();
  CHECK(same_bits(host_values(host), v));
}

// Tickets are waited for once, and only tickets this backend handed out; copies need the same
// shape and dtype on both sides.
inline void misuse_is_an_error(Backend& b) {
  OwnedTensor src = b.allocate({4}, DType::F32);
  b.fill_zero(*src);
  OwnedTensor host = b.allocate_host({4}, DType::F32);
  const CopyTicket t = b.copy_async(*host, *src);
  CHECK(contains(error_of([&] { b.wait_copy(CopyTicket{}); }), "was not handed out"));
  CHECK(contains(error_of([&] { b.wait_copy(CopyTicket{t.id + 1000}); }), "was not handed out"));
  b.wait_copy(t);
  CHECK(contains(error_of([&] { b.wait_copy(t); }), "already waited for"));
  OwnedTensor wrong_shape = b.allocate_host({5}, DType::F32);
  CHECK(contains(error_of([&] { b.copy_async(*wrong_shape, *src); }), "copy_async"));
  OwnedTensor wrong_dtype = b.allocate_host({4}, DType::I32);
  CHECK(contains(error_of([&] { b.copy_async(*wrong_dtype, *src); }), "copy_async"));
  b.synchronize();
}

}  // namespace ll::test::offload_cases
