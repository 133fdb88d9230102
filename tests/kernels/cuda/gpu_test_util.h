#pragma once
// Helpers for the CUDA kernel tests: device buffers, bf16 rounding on the host (round to
// nearest even, as __float2bfloat16_rn), upload/download, NaN poisoning (0xFF bytes).
// Include only under #if defined(LL_HAVE_CUDA).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "kernels/cuda/cuda_check.h"

namespace ll::test {

// Relative error of one bf16 rounding is at most 2^-8 of the value; a little margin for the
// fp32 differences in front of it.
inline constexpr double kBf16Rtol = 5e-3;

inline uint16_t f32_to_bf16_bits(float f) {
  uint32_t u = 0;
  std::memcpy(&u, &f, sizeof(u));
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40u);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

inline float bf16_bits_to_f32(uint16_t b) {
  const uint32_t u = uint32_t(b) << 16;
  float f = 0.0f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

inline std::vector<float> round_bf16(std::vector<float> v) {
  for (float& x : v) x = bf16_bits_to_f32(f32_to_bf16_bits(x));
  return v;
}

inline std::vector<double> to_double(const std::vector<float>& v) {
  return std::vector<double>(v.begin(), v.end());
}

// Owns count elements of device memory (at least one element is allocated, so count == 0
// still gives a valid pointer).
template <typename T>
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t count) : count_(count) {
    LL_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&ptr_), (count ? count : 1) * sizeof(T)));
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept
      : ptr_(std::exchange(o.ptr_, nullptr)), count_(o.count_) {}
  ~DeviceBuffer() {
    if (ptr_ != nullptr) (void)cudaFree(ptr_);
  }
  T* get() const { return ptr_; }
  size_t size() const { return count_; }
  size_t bytes() const { return count_ * sizeof(T); }
  void poison() const { LL_CUDA_CHECK(cudaMemset(ptr_, 0xFF, (count_ ? count_ : 1) * sizeof(T))); }

 private:
  T* ptr_ = nullptr;
  size_t count_ = 0;
};

using bf16 = __nv_bfloat16;

// Uploads v rounded to bf16.
inline DeviceBuffer<bf16> upload_bf16(const std::vector<float>& v) {
  std::vector<uint16_t> bits(v.size());
  for (size_t i = 0; i < v.size(); ++i) bits[i] = f32_to_bf16_bits(v[i]);
  DeviceBuffer<bf16> d(v.size());
  if (!v.empty())
    LL_CUDA_CHECK(cudaMemcpy(d.get(), bits.data(), d.bytes(), cudaMemcpyHostToDevice));
  return d;
}

inline std::vector<float> download_bf16(const bf16* p, size_t n) {
  std::vector<uint16_t> bits(n);
  if (n) LL_CUDA_CHECK(cudaMemcpy(bits.data(), p, n * sizeof(uint16_t), cudaMemcpyDeviceToHost));
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = bf16_bits_to_f32(bits[i]);
  return v;
}

inline std::vector<float> download_bf16(const DeviceBuffer<bf16>& d) {
  return download_bf16(d.get(), d.size());
}

template <typename T>
inline DeviceBuffer<T> upload(const std::vector<T>& v) {
  DeviceBuffer<T> d(v.size());
  if (!v.empty()) LL_CUDA_CHECK(cudaMemcpy(d.get(), v.data(), d.bytes(), cudaMemcpyHostToDevice));
  return d;
}

template <typename T>
inline std::vector<T> download(const DeviceBuffer<T>& d) {
  std::vector<T> v(d.size());
  if (!v.empty()) LL_CUDA_CHECK(cudaMemcpy(v.data(), d.get(), d.bytes(), cudaMemcpyDeviceToHost));
  return v;
}

template <typename T>
inline bool same_bytes(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() &&
         (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0);
}

inline void device_sync() { LL_CUDA_CHECK(cudaDeviceSynchronize()); }

}  // namespace ll::test
