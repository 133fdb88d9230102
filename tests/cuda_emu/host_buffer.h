#pragma once
// Host memory standing in for device buffers in emulated launches: 16-byte aligned (the
// kernels' vector loads and stores need it), optionally poisoned with 0xFF bytes (NaN as bf16
// and fp32, like the GPU tests' poisoned outputs), and registered as global memory cp.async
// may read when asked.
#include <cuda_runtime.h>  // uint4

#include <sys/mman.h>

#include <cstddef>
#include <cstring>
#include <vector>

#include "common/error.h"

#include "tests/cuda_emu/simt_emulator.h"

namespace ll::cuda::emu {

class HostBuffer {
 public:
  explicit HostBuffer(size_t bytes, bool poison = false)
      : storage_((bytes + 15) / 16 + 1), bytes_(bytes) {
    if (poison) std::memset(storage_.data(), 0xff, storage_.size() * 16);
  }
  template <typename T>
  explicit HostBuffer(const std::vector<T>& v) : HostBuffer(v.size() * sizeof(T)) {
    if (!v.empty()) std::memcpy(storage_.data(), v.data(), bytes_);
  }
  // Lets cp.async read this buffer (see register_global; clear_globals forgets it).
  HostBuffer& as_global() {
    register_global(storage_.data(), bytes_);
    return *this;
  }
  template <typename T>
  T* as() {
    return reinterpret_cast<T*>(storage_.data());
  }
  template <typename T>
  std::vector<T> read(size_t count) const {
    std::vector<T> v(count);
    if (count) std::memcpy(v.data(), storage_.data(), count * sizeof(T));
    return v;
  }
  size_t bytes() const { return bytes_; }

 private:
  std::vector<uint4> storage_;  // one spare chunk: a zero-byte buffer still has an address
  size_t bytes_;
};

// A huge zero-filled host range standing in for a device tensor past 2^31 elements: address
// space reserved without backing (MAP_NORESERVE), so only the pages a test writes (and a
// kernel writes) take memory; reads of untouched pages see zeros. With the emulator's block
// filter (set_block_filter) a test runs the kernels over a small window of such a tensor.
class SparseBuffer {
 public:
  explicit SparseBuffer(size_t bytes) : bytes_(bytes) {
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    LL_CHECK(p != MAP_FAILED, "SparseBuffer: cannot reserve {} bytes of address space", bytes);
    base_ = static_cast<unsigned char*>(p);
  }
  ~SparseBuffer() { munmap(base_, bytes_); }
  SparseBuffer(const SparseBuffer&) = delete;
  SparseBuffer& operator=(const SparseBuffer&) = delete;
  template <typename T>
  T* as() {
    return reinterpret_cast<T*>(base_);
  }
  size_t bytes() const { return bytes_; }

 private:
  unsigned char* base_ = nullptr;  // page-aligned
  size_t bytes_;
};

}  // namespace ll::cuda::emu
