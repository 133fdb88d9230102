#include "kernels/cpu/cpu_backend.h"

#include <algorithm>
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
#include "optim/adamw.h"

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
  stats_->in_use += int64_t(bytes);
  stats_->peak = std::max(stats_->peak, stats_->in_use);
  t.storage = std::shared_ptr<void>(p, [stats = stats_, bytes](void* q) {
    std::free(q);
    stats->in_use -= int64_t(bytes);
  });
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
                                bool accumulate, float alpha) {
  const int64_t m = x.dim(0), k = x.dim(1), n_out = w.dim(0);
  check_shape(w, {n_out, k}, "matmul weight");
  check_shape(out, {m, n_out}, "matmul output");
  cpu::matmul_forward_scaled(out.f32(), x.f32(), w.f32(), m, k, n_out, alpha, accumulate);
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

void CpuBackend::copy(const Tensor& dst, const Tensor& src) {
  LL_CHECK(dst.shape == src.shape && dst.dtype == src.dtype, "copy: shape or dtype mismatch");
  std::memcpy(dst.data, src.data, src.nbytes());
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

int64_t CpuBackend::classifier_forward_backward(const Tensor& losses, const Tensor& dx,
                                                const Tensor& dlm_head, const Tensor& x,
                                                const Tensor& lm_head,
                                                const Tensor& targets, int64_t chunk_rows,
                                                float loss_scale) {
  const int64_t n = x.dim(0), d = x.dim(1), v = lm_head.dim(0);
  check_shape(lm_head, {v, d}, "lm_head");
  check_shape(targets, {n}, "targets");
  check_shape(losses, {n}, "losses");
  check_shape(dx, {n, d}, "classifier input gradient");
  float* dlm_head_ptr = nullptr;
  if (dlm_head.data != nullptr) {
    check_shape(dlm_head, {v, d}, "lm_head gradient");
    dlm_head_ptr = dlm_head.f32();
  }
  return cpu::classifier_forward_backward(losses.f32(), dx.f32(), dlm_head_ptr, x.f32(), lm_head.f32(),
                                          targets.i32(), n, d, v, chunk_rows, loss_scale);
}

void CpuBackend::matmul_backward_input(const Tensor& dx, const Tensor& dout, const Tensor& w,
                                       bool accumulate, float alpha) {
  const int64_t m = dout.dim(0), n_out = dout.dim(1), k = w.dim(1);
  check_shape(w, {n_out, k}, "matmul weight");
  check_shape(dx, {m, k}, "matmul input gradient");
  cpu::matmul_backward_input(dx.f32(), dout.f32(), w.f32(), m, k, n_out, alpha, accumulate);
}

void CpuBackend::matmul_backward_weight(const Tensor& dw, const Tensor& dout, const Tensor& x,
                                        bool accumulate, float alpha) {
  const int64_t m = dout.dim(0), n_out = dout.dim(1), k = x.dim(1);
  check_shape(x, {m, k}, "matmul input");
  check_shape(dw, {n_out, k}, "matmul weight gradient");
  cpu::matmul_backward_weight(dw.f32(), dout.f32(), x.f32(), m, k, n_out, alpha, accumulate);
}

void CpuBackend::rmsnorm_backward(const Tensor& dx, const Tensor& dweight, const Tensor& dout,
                                  const Tensor& x, const Tensor& weight, const Tensor& rstd) {
  const int64_t n = x.dim(0), d = x.dim(1);
  check_shape(dx, {n, d}, "rmsnorm input gradient");
  check_shape(dout, {n, d}, "rmsnorm output gradient");
  check_shape(weight, {d}, "rmsnorm weight");
  check_shape(rstd, {n}, "rmsnorm rstd");
  float* dweight_ptr = nullptr;
  if (dweight.data != nullptr) {
    check_shape(dweight, {d}, "rmsnorm weight gradient");
    dweight_ptr = dweight.f32();
  }
  cpu::rmsnorm_backward(dx.f32(), dweight_ptr, dout.f32(), x.f32(), weight.f32(), rstd.f32(), n,
                        d);
}

void CpuBackend::rope_backward(const Tensor& dx, int64_t position_offset, double scale,
                               double theta) {
  cpu::rope_backward(dx.f32(), dx.dim(0), dx.dim(1), dx.dim(2), position_offset, scale, theta);
}

void CpuBackend::attention_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                                    const Tensor& dout, const Tensor& q, const Tensor& k,
                                    const Tensor& v, const Tensor& out, const Tensor& lse,
                                    const AttnMask& mask) {
  const int64_t n = q.dim(0), h = q.dim(1), hd = q.dim(2), hkv = k.dim(1);
  check_shape(k, {n, hkv, hd}, "attention keys");
  check_shape(v, {n, hkv, hd}, "attention values");
  check_shape(out, {n, h, hd}, "attention output");
  check_shape(dout, {n, h, hd}, "attention output gradient");
  check_shape(dq, {n, h, hd}, "attention query gradient");
  check_shape(dk, {n, hkv, hd}, "attention key gradient");
  check_shape(dv, {n, hkv, hd}, "attention value gradient");
  check_shape(lse, {h, n}, "attention log-sum-exp");
  cpu::attention_backward(dq.f32(), dk.f32(), dv.f32(), dout.f32(), q.f32(), k.f32(), v.f32(),
                          out.f32(), lse.f32(), n, h, hkv, hd, mask);
}

void CpuBackend::swiglu_backward(const Tensor& dgate, const Tensor& dup, const Tensor& dout,
                                 const Tensor& gate, const Tensor& up) {
  LL_CHECK(dgate.shape == gate.shape && dup.shape == up.shape && gate.shape == up.shape &&
               dout.shape == gate.shape,
           "swiglu backward: shape mismatch");
  cpu::swiglu_backward(dgate.f32(), dup.f32(), dout.f32(), gate.f32(), up.f32(), gate.numel());
}

void CpuBackend::embedding_backward(const Tensor& dtable, const Tensor& dout,
                                    const Tensor& tokens) {
  const int64_t n = tokens.dim(0), v = dtable.dim(0), d = dtable.dim(1);
  check_shape(dout, {n, d}, "embedding output gradient");
  cpu::embedding_backward(dtable.f32(), dout.f32(), tokens.i32(), n, v, d);
}

void CpuBackend::fill_zero(const Tensor& x) { cpu::fill_zero(x.f32(), x.numel()); }

double CpuBackend::sum_squares(const Tensor& x) { return cpu::sum_squares(x.f32(), x.numel()); }

void CpuBackend::adamw_step(const Tensor& master, const Tensor& param, const Tensor& grad,
                            const Tensor& m, const Tensor& v, const AdamWStep& step) {
  const int64_t n = master.numel();
  LL_CHECK(param.numel() == n && grad.numel() == n && m.numel() == n && v.numel() == n,
           "adamw: parameter, gradient and moments differ in size");
  adamw_update(master.f32(), grad.f32(), m.f32(), v.f32(), n, step);
  // On the CPU the forward reads fp32 weights: copy unless param is the master itself.
  if (param.data != master.data) std::memcpy(param.f32(), master.f32(), master.nbytes());
}

}  // namespace ll
