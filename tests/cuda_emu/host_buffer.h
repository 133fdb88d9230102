#pragma once
// Host memory standing in for device buffers in emulated launches: 16-byte aligned (the
// kernels' vector loads and stores need it), optionally poisoned with 0xFF bytes (NaN as bf16
// and fp32, like the GPU tests' poisoned outputs), and registered as global memory cp.async
// may read when asked.
#include <cuda_runtime.h>  // uint4

#include <cstddef>
#include <cstring>
#include <vector>

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

}  // namespace ll::cuda::emu
