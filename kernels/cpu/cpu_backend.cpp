#include "kernels/cpu/cpu_backend.h"

#include <cstdlib>
#include <cstring>

#include <fmt/ranges.h>

#include "kernels/cpu/attention.h"
#include "kernels/cpu/cross_entropy.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/embedding.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/rmsnorm.h"
#include "kernels/cpu/rope.h"
#include "kernels/cpu/swiglu.h"

namespace ll {
namespace {

void check_shape(const Tensor& t, std::initializer_list<int64_t> expected, const char* what) {
  LL_CHECK(t.shape == std::vector<int64_t>(expected), "cpu backend: {} has shape [{}], expected [{}]",
           what, fmt::join(t.shape, ", "), fmt::join(expected, ", "));
}

}  // namespace

OwnedTensor CpuBackend::allocate(std::vector<int64_t> shape, DType dtype) {
  OwnedTensor t;
  t.view.dtype = dtype;
  t.view.shape = std::move(shape);
  const size_t bytes = t.view.nbytes();
  // 64-byte alignment for vectorised loops; at least one byte so data is never null.
  void* p = std::aligned_alloc(64, ((bytes + 63) / 64) * 64 + 64);
  LL_CHECK(p != nullptr, "cpu backend: out of memory allocating {} bytes", bytes);
  t.storage = std::shared_ptr<void>(p, std::free);
  t.view.data = p;
  return t;
}

void CpuBackend::upload_f32(const Tensor& dst, const float* src) {
  std::memcpy(dst.f32(), src, dst.nbytes());
}

void CpuBackend::upload_i32(const Tensor& dst, const int32_t* src) {
  std::memcpy(dst.i32(), src, dst.nbytes());
}

void CpuBackend::download_f32(float* dst, const Tensor& src) {
  std::memcpy(dst, src.f32(), src.nbytes());
}

void CpuBackend::embedding_forward(const Tensor& out, const Tensor& table, const Tensor& tokens) {
  const int64_t n = tokens.dim(0), v = table.dim(0), d = table.dim(1);
  check_shape(out, {n, d}, "embedding output");
  cpu::embedding_forward(out.f32(), table.f32(), tokens.i32(), n, v, d);
}

void CpuBackend::rmsnorm_forward(const Tensor& out, const Tensor& rstd, const Tensor& x,
                                 const Tensor& weight, float eps) {
  const int64_t n = x.dim(0), d = x.dim(1);
  check_shape(out, {n, d}, "rmsnorm output");
  check_shape(weight, {d}, "rmsnorm weight");
  float* rstd_ptr = rstd.data == nullptr ? nullptr : rstd.f32();
  cpu::rmsnorm_forward(out.f32(), rstd_ptr, x.f32(), weight.f32(), n, d, eps);
}

void CpuBackend::matmul_forward(const Tensor& out, const Tensor& x, const Tensor& w,
                                bool accumulate) {
  const int64_t m = x.dim(0), k = x.dim(1), n_out = w.dim(0);
  check_shape(w, {n_out, k}, "matmul weight");
  check_shape(out, {m, n_out}, "matmul output");
  cpu::matmul_forward(out.f32(), x.f32(), w.f32(), m, k, n_out, accumulate);
}

void CpuBackend::rope_forward(const Tensor& x, int64_t position_offset, double scale,
                              double theta) {
  cpu::rope_forward(x.f32(), x.dim(0), x.dim(1), x.dim(2), position_offset, scale, theta);
}

void CpuBackend::attention_forward(const Tensor& out, const Tensor& lse, const Tensor& q,
                                   const Tensor& k, const Tensor& v, const AttnMask& mask) {
  const int64_t n = q.dim(0), h = q.dim(1), hd = q.dim(2), hkv = k.dim(1);
  check_shape(k, {n, hkv, hd}, "attention keys");
  check_shape(v, {n, hkv, hd}, "attention values");
  check_shape(out, {n, h, hd}, "attention output");
  float* lse_ptr = lse.data == nullptr ? nullptr : lse.f32();
  cpu::attention_forward(out.f32(), lse_ptr, q.f32(), k.f32(), v.f32(), n, h, hkv, hd, mask);
}

void CpuBackend::swiglu_forward(const Tensor& out, const Tensor& gate, const Tensor& up) {
  LL_CHECK(out.shape == gate.shape && gate.shape == up.shape, "swiglu: shape mismatch");
  cpu::swiglu_forward(out.f32(), gate.f32(), up.f32(), out.numel());
}

void CpuBackend::add_inplace(const Tensor& x, const Tensor& y) {
  LL_CHECK(x.shape == y.shape, "add: shape mismatch");
  cpu::add_inplace(x.f32(), y.f32(), x.numel());
}

int64_t CpuBackend::classifier_forward(const Tensor& losses, const Tensor& x,
                                       const Tensor& lm_head, const Tensor& targets,
                                       int64_t chunk_rows) {
  const int64_t n = x.dim(0), d = x.dim(1), v = lm_head.dim(0);
  check_shape(lm_head, {v, d}, "lm_head");
  check_shape(targets, {n}, "targets");
  check_shape(losses, {n}, "losses");
  return cpu::classifier_forward(losses.f32(), x.f32(), lm_head.f32(), targets.i32(), n, d, v,
                                 chunk_rows);
}

}  // namespace ll
