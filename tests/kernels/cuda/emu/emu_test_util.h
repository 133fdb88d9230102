#pragma once
// Helpers shared by the tests that run CUDA kernels in the SIMT emulator (test_*_emu.cpp):
// both fiber orders, bf16 bits <-> float vectors, poisoned and misaligned host buffers standing
// in for device memory, and the seeds of numbered cases. CUDA-emulator builds only (include it
// under #if defined(LL_HAVE_SIMT_EMULATOR), after the kernel headers); it needs no prelude itself.
#include <cuda_bf16.h>
#include <cuda_runtime.h>  // uint4

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "tests/cuda_emu/emu_launcher.h"
#include "tests/cuda_emu/host_buffer.h"
#include "tests/kernels/cuda/gpu_test_util.h"
#include "tests/kernels/kernel_test_util.h"

namespace ll::test::emu_util {

namespace emu = ll::cuda::emu;

// Schedules the fibers in `order` while it lives, then the forward order again (also when a
// launch throws, so a failed case leaves the next one in the default order).
class ScopedOrder {
 public:
  explicit ScopedOrder(emu::Order order) { emu::set_order(order); }
  ~ScopedOrder() { emu::set_order(emu::Order::Forward); }
  ScopedOrder(const ScopedOrder&) = delete;
  ScopedOrder& operator=(const ScopedOrder&) = delete;
};

// Runs only the blocks `filter` accepts while it lives (emu::set_block_filter), then every
// block again (also when a launch throws).
class ScopedBlockFilter {
 public:
  explicit ScopedBlockFilter(emu::BlockFilter filter) { emu::set_block_filter(std::move(filter)); }
  ~ScopedBlockFilter() { emu::set_block_filter({}); }
  ScopedBlockFilter(const ScopedBlockFilter&) = delete;
  ScopedBlockFilter& operator=(const ScopedBlockFilter&) = delete;
};

// run() with the fibers in `order`; its result.
template <typename Run>
auto run_in_order(emu::Order order, Run&& run) {
  const ScopedOrder scope(order);
  return run();
}

// run() in the forward and then the reverse fiber order; both results (deterministic kernels
// must give the same bytes: a race between warps would show).
template <typename Run>
auto run_both_orders(Run&& run) {
  auto forward = run_in_order(emu::Order::Forward, run);
  auto reverse = run_in_order(emu::Order::Reverse, run);
  return std::pair(std::move(forward), std::move(reverse));
}

// bf16 tensors are held on the host as their bits (round to nearest even).
inline std::vector<uint16_t> to_bf16_bits(const std::vector<float>& v) {
  std::vector<uint16_t> bits(v.size());  // [n]
  for (size_t i = 0; i < v.size(); ++i) bits[i] = f32_to_bf16_bits(v[i]);
  return bits;
}
inline std::vector<float> from_bf16_bits(const std::vector<uint16_t>& bits) {
  std::vector<float> v(bits.size());  // [n]
  for (size_t i = 0; i < bits.size(); ++i) v[i] = bf16_bits_to_f32(bits[i]);
  return v;
}
inline __nv_bfloat16* as_bf16(uint16_t* bits) { return reinterpret_cast<__nv_bfloat16*>(bits); }
inline const __nv_bfloat16* as_bf16(const uint16_t* bits) {
  return reinterpret_cast<const __nv_bfloat16*>(bits);
}

// check_close of bf16 results (raw bits) against an fp32 reference.
inline void check_bf16_close(const std::vector<uint16_t>& got, const std::vector<float>& ref,
                             double atol, double rtol, double rel_norm_tol) {
  check_close(from_bf16_bits(got), to_double(ref), atol, rtol, rel_norm_tol);
}

// The bf16 values of v (rounded) in an aligned host buffer.
inline emu::HostBuffer bf16_host_buffer(const std::vector<float>& v) {
  return emu::HostBuffer(to_bf16_bits(v));
}

// count elements of T of b from element `offset` on (b holds at least offset + count).
template <typename T>
std::vector<T> read_from(const emu::HostBuffer& b, size_t offset, size_t count) {
  const std::vector<T> all = b.read<T>(offset + count);  // [offset + count]
  return std::vector<T>(all.begin() + std::ptrdiff_t(offset), all.end());
}

// n elements of T, all bytes 0xFF (NaN as fp32, fp64 and bf16): an unwritten element shows.
template <typename T>
std::vector<T> poisoned_vector(size_t n) {
  std::vector<T> v(n);
  if (n) std::memset(v.data(), 0xFF, n * sizeof(T));
  return v;
}

// n elements of T (bf16 as its uint16_t bits) in 16-byte aligned storage, starting `offset`
// elements past the alignment (offset 1 gives a pointer the kernels' 16-byte paths must
// refuse). Starts poisoned (0xFF bytes) unless built from values.
template <typename T>
class OffsetBuffer {
 public:
  explicit OffsetBuffer(size_t n, size_t offset = 0)
      : storage_((offset + n) * sizeof(T) / 16 + 1), offset_(offset), n_(n) {
    std::memset(storage_.data(), 0xFF, storage_.size() * sizeof(uint4));
  }
  explicit OffsetBuffer(const std::vector<T>& values, size_t offset = 0)
      : OffsetBuffer(values.size(), offset) {
    if (n_) std::memcpy(data(), values.data(), n_ * sizeof(T));
  }
  T* data() { return reinterpret_cast<T*>(storage_.data()) + offset_; }
  const T* data() const { return reinterpret_cast<const T*>(storage_.data()) + offset_; }
  // The elements as the kernels' type (bf16 for uint16_t bits).
  template <typename U>
  U* as() {
    return reinterpret_cast<U*>(data());
  }
  std::vector<T> values() const { return std::vector<T>(data(), data() + n_); }

 private:
  std::vector<uint4> storage_;  // [(offset + n) * sizeof(T) / 16 + 1] chunks of 16 bytes
  size_t offset_ = 0;           // elements before data()
  size_t n_ = 0;
};

// Numbered cases take the fixed and the fresh seed in turn, each case its own.
inline uint64_t case_seed(const std::vector<uint64_t>& seeds, size_t index) {
  return seeds[index % seeds.size()] + uint64_t(index) * 7919u;
}

}  // namespace ll::test::emu_util
