#pragma once
// A non-owning view of a dense row-major tensor in some backend's memory, and an owning
// handle. Shapes are listed outermost first, e.g. [N, H, hd].
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <vector>

#include "common/dtype.h"
#include "common/error.h"

namespace ll {

struct Tensor {
  void* data = nullptr;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;

  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
  int64_t dim(size_t i) const { return shape.at(i); }
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype); }
  float* f32() const {
    LL_CHECK(dtype == DType::F32, "expected an F32 tensor, got {}", dtype_name(dtype));
    return static_cast<float*>(data);
  }
  int32_t* i32() const {
    LL_CHECK(dtype == DType::I32, "expected an I32 tensor, got {}", dtype_name(dtype));
    return static_cast<int32_t*>(data);
  }
};

// The same storage seen with another shape of equal element count (e.g. [N, H*hd] as
// [N, H, hd]); `offset_elems` moves the start, for row slices of a larger buffer.
inline Tensor reshaped(const Tensor& t, std::vector<int64_t> shape, int64_t offset_elems = 0) {
  Tensor r{nullptr, t.dtype, std::move(shape)};
  LL_CHECK(offset_elems >= 0 && offset_elems + r.numel() <= t.numel(),
           "reshape of a {}-element tensor to {} elements at offset {}", t.numel(), r.numel(),
           offset_elems);
  r.data = static_cast<char*>(t.data) + size_t(offset_elems) * dtype_size(t.dtype);
  return r;
}

// Owns the memory behind a Tensor view; the deleter comes from the backend that allocated it.
struct OwnedTensor {
  Tensor view;
  std::shared_ptr<void> storage;
  const Tensor& operator*() const { return view; }
  const Tensor* operator->() const { return &view; }
};

}  // namespace ll
