#pragma once
// Tensors on any Backend from and to host fp32, for tests that drive backends through their
// virtuals (tests/kernels/cuda/test_backend_ops_gpu.cpp, test_cuda_backend_gpu.cpp).
#include <doctest/doctest.h>

#include <cstdint>
#include <utility>
#include <vector>

#include "kernels/backend.h"

namespace ll::test {

// A tensor of `shape` on `backend` holding host values (converted to dtype).
inline OwnedTensor put(Backend& backend, std::vector<int64_t> shape, DType dtype,
                       const std::vector<float>& host) {
  OwnedTensor t = backend.allocate(std::move(shape), dtype);
  REQUIRE(size_t(t->numel()) == host.size());
  backend.upload_f32(*t, host.data());
  return t;
}

// The tensor's values as host fp32.
inline std::vector<float> get(Backend& backend, const OwnedTensor& t) {
  std::vector<float> v(size_t(t->numel()));
  backend.download_f32(v.data(), *t);
  return v;
}

}  // namespace ll::test
