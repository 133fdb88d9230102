#include "kernels/cpu/cpu_backend.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "kernels/backend_shapes.h"
#include "kernels/cpu/attention.h"
#include "kernels/cpu/bias.h"
#include "kernels/cpu/cross_entropy.h"
#include "kernels/cpu/elementwise.h"
#include "kernels/cpu/embedding.h"
#include "kernels/cpu/matmul.h"
#include "kernels/cpu/rmsnorm.h"
#include "kernels/cpu/rope.h"
#include "kernels/cpu/swiglu.h"
#include "optim/adamw.h"

namespace ll {

OwnedTensor CpuBackend::allocate(std::vector<int64_t> shape, DType dtype) {
  return allocate_counted(std::move(shape), dtype, stats_);
}

OwnedTensor CpuBackend::classifier_scratch(int64_t n, int64_t v, int64_t chunk_rows) {
  // Counted like any tensor, so that the memory plan's classifier chunk is this backend's too.
  if (n <= 0 || chunk_rows < 1) return {};  // the kernel reports a bad chunk size
  return allocate({std::min(chunk_rows, n), v}, DType::F32);
}

OwnedTensor CpuBackend::allocate_host(std::vector<int64_t> shape, DType dtype) {
  return allocate_counted(std::move(shape), dtype, host_stats_);
}

CopyTicket CpuBackend::copy_async(const Tensor& dst, const Tensor& src) {
  shapes::same_shape({&dst, &src}, "copy_async");
  LL_CHECK(dst.dtype == src.dtype, "copy_async: {} into {}", dtype_name(src.dtype),
           dtype_name(dst.dtype));
  copy(dst, src);
  copies_waiting_.insert(copies_started_);
  return CopyTicket{copies_started_++};
}

void CpuBackend::wait_copy(CopyTicket ticket) {
  LL_CHECK(ticket.id >= 0 && ticket.id < copies_started_,
           "wait_copy: ticket {} was not handed out by this backend's copy_async", ticket.id);
  LL_CHECK(copies_waiting_.erase(ticket.id) == 1,
           "wait_copy: ticket {} was already waited for (each copy is waited for once)", ticket.id);
}

OwnedTensor CpuBackend::allocate_counted(std::vector<int64_t> shape, DType dtype,
                                         const std::shared_ptr<AllocStats>& stats) {
  OwnedTensor t;
  t.view.dtype = dtype;
  t.view.shape = std::move(shape);
  const size_t bytes = t.view.nbytes();
  // 64-byte alignment for vectorised loops; at least one byte so data is never null.
  void* p = std::aligned_alloc(64, ((bytes + 63) / 64) * 64 + 64);
  LL_CHECK(p != nullptr, "cpu backend: out of memory allocating {} bytes", bytes);
  stats->in_use += int64_t(bytes);
  stats->peak = std::max(stats->peak, stats->in_use);
  t.storage = std::shared_ptr<void>(p, [stats, bytes](void* q) {
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
  const shapes::EmbeddingDims s = shapes::embedding_forward(out, table, tokens);
  cpu::embedding_forward(out.f32(), table.f32(), tokens.i32(), s.n, s.v, s.d);
}

void CpuBackend::rmsnorm_forward(const Tensor& out, const Tensor& rstd, const Tensor& x,
                                 const Tensor& weight, float eps) {
  const shapes::RowDims s = shapes::rmsnorm_forward(out, rstd, x, weight);
  float* rstd_ptr = rstd.data == nullptr ? nullptr : rstd.f32();
  cpu::rmsnorm_forward(out.f32(), rstd_ptr, x.f32(), weight.f32(), s.n, s.d, eps);
}

void CpuBackend::matmul_forward(const Tensor& out, const Tensor& x, const Tensor& w,
                                bool accumulate, float alpha) {
  const shapes::MatmulDims s = shapes::matmul_forward(out, x, w);
  cpu::matmul_forward_scaled(out.f32(), x.f32(), w.f32(), s.m, s.k, s.n_out, alpha, accumulate);
}

void CpuBackend::add_bias(const Tensor& out, const Tensor& bias) {
  const shapes::BiasDims s = shapes::add_bias(out, bias);
  cpu::add_bias(out.f32(), bias.f32(), s.m, s.c);
}

void CpuBackend::rope_forward(const Tensor& x, int64_t position_offset,
                              const RopeFrequencies& freqs) {
  const shapes::RopeDims s = shapes::rope(x);
  cpu::rope_forward(x.f32(), s.n, s.heads, s.hd, position_offset, freqs);
}

void CpuBackend::attention_forward(const Tensor& out, const Tensor& lse, const Tensor& q,
                                   const Tensor& k, const Tensor& v, const AttentionPattern& mask) {
  const shapes::AttnDims s = shapes::attention_forward(out, lse, q, k, v, mask);
  float* lse_ptr = lse.data == nullptr ? nullptr : lse.f32();
  cpu::attention_forward(out.f32(), lse_ptr, q.f32(), k.f32(), v.f32(), s.n, s.h, s.hkv, s.hd,
                         mask);
}

void CpuBackend::attention_forward_cached(const Tensor& out, const Tensor& q, const Tensor& k,
                                          const Tensor& v, int64_t past) {
  const shapes::AttnDims s = shapes::attention_forward_cached(out, q, k, v, past);
  cpu::attention_forward_cached(out.f32(), q.f32(), k.f32(), v.f32(), s.n, past, s.h, s.hkv, s.hd);
}

void CpuBackend::swiglu_forward(const Tensor& out, const Tensor& gate, const Tensor& up) {
  shapes::same_shape({&out, &gate, &up}, "swiglu");
  cpu::swiglu_forward(out.f32(), gate.f32(), up.f32(), out.numel());
}

void CpuBackend::add_inplace(const Tensor& x, const Tensor& y) {
  shapes::same_shape({&x, &y}, "add");
  cpu::add_inplace(x.f32(), y.f32(), x.numel());
}

void CpuBackend::copy(const Tensor& dst, const Tensor& src) {
  shapes::same_shape({&dst, &src}, "copy");
  if (src.dtype == DType::F32 && dst.dtype == DType::BF16) {
    const float* in = src.f32();
    uint16_t* out = static_cast<uint16_t*>(dst.data);
    for (int64_t i = 0, n = src.numel(); i < n; ++i) out[i] = f32_to_bf16(in[i]);
    return;
  }
  LL_CHECK(dst.dtype == src.dtype, "copy: {} into {}", dtype_name(src.dtype),
           dtype_name(dst.dtype));
  std::memcpy(dst.data, src.data, src.nbytes());
}

int64_t CpuBackend::classifier_forward(const Tensor& losses, const Tensor& x, const Tensor& lm_head,
                                       const Tensor& targets, int64_t chunk_rows) {
  const shapes::ClassifierDims s = shapes::classifier_forward(losses, x, lm_head, targets);
  OwnedTensor logits = classifier_scratch(s.n, s.v, chunk_rows);  // [chunk, V]
  return cpu::classifier_forward(losses.f32(), x.f32(), lm_head.f32(), targets.i32(), s.n, s.d, s.v,
                                 chunk_rows, logits->data == nullptr ? nullptr : logits->f32());
}

int64_t CpuBackend::classifier_forward_backward(const Tensor& losses, const Tensor& dx,
                                                const Tensor& dlm_head, const Tensor& x,
                                                const Tensor& lm_head, const Tensor& targets,
                                                int64_t chunk_rows, float loss_scale) {
  const shapes::ClassifierDims s =
      shapes::classifier_forward_backward(losses, dx, dlm_head, x, lm_head, targets);
  float* dlm_head_ptr = dlm_head.data == nullptr ? nullptr : dlm_head.f32();
  OwnedTensor logits = classifier_scratch(s.n, s.v, chunk_rows);  // [chunk, V]
  return cpu::classifier_forward_backward(
      losses.f32(), dx.f32(), dlm_head_ptr, x.f32(), lm_head.f32(), targets.i32(), s.n, s.d, s.v,
      chunk_rows, loss_scale, logits->data == nullptr ? nullptr : logits->f32());
}

void CpuBackend::matmul_backward_input(const Tensor& dx, const Tensor& dout, const Tensor& w,
                                       bool accumulate, float alpha) {
  const shapes::MatmulDims s = shapes::matmul_backward_input(dx, dout, w);
  cpu::matmul_backward_input(dx.f32(), dout.f32(), w.f32(), s.m, s.k, s.n_out, alpha, accumulate);
}

void CpuBackend::matmul_backward_weight(const Tensor& dw, const Tensor& dout, const Tensor& x,
                                        bool accumulate, float alpha) {
  const shapes::MatmulDims s = shapes::matmul_backward_weight(dw, dout, x);
  cpu::matmul_backward_weight(dw.f32(), dout.f32(), x.f32(), s.m, s.k, s.n_out, alpha, accumulate);
}

void CpuBackend::bias_backward(const Tensor& dbias, const Tensor& dout) {
  const shapes::BiasDims s = shapes::bias_backward(dbias, dout);
  cpu::bias_backward(dbias.f32(), dout.f32(), s.m, s.c);
}

void CpuBackend::rmsnorm_backward(const Tensor& dx, const Tensor& dweight, const Tensor& dout,
                                  const Tensor& x, const Tensor& weight, const Tensor& rstd) {
  const shapes::RowDims s = shapes::rmsnorm_backward(dx, dweight, dout, x, weight, rstd);
  float* dweight_ptr = dweight.data == nullptr ? nullptr : dweight.f32();
  cpu::rmsnorm_backward(dx.f32(), dweight_ptr, dout.f32(), x.f32(), weight.f32(), rstd.f32(), s.n,
                        s.d);
}

void CpuBackend::rope_backward(const Tensor& dx, int64_t position_offset,
                               const RopeFrequencies& freqs) {
  const shapes::RopeDims s = shapes::rope(dx);
  cpu::rope_backward(dx.f32(), s.n, s.heads, s.hd, position_offset, freqs);
}

void CpuBackend::attention_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                                    const Tensor& dout, const Tensor& q, const Tensor& k,
                                    const Tensor& v, const Tensor& out, const Tensor& lse,
                                    const AttentionPattern& mask) {
  const shapes::AttnDims s = shapes::attention_backward(dq, dk, dv, dout, q, k, v, out, lse, mask);
  cpu::attention_backward(dq.f32(), dk.f32(), dv.f32(), dout.f32(), q.f32(), k.f32(), v.f32(),
                          out.f32(), lse.f32(), s.n, s.h, s.hkv, s.hd, mask);
}

void CpuBackend::swiglu_backward(const Tensor& dgate, const Tensor& dup, const Tensor& dout,
                                 const Tensor& gate, const Tensor& up) {
  shapes::same_shape({&dgate, &dup, &dout, &gate, &up}, "swiglu backward");
  cpu::swiglu_backward(dgate.f32(), dup.f32(), dout.f32(), gate.f32(), up.f32(), gate.numel());
}

void CpuBackend::embedding_backward(const Tensor& dtable, const Tensor& dout,
                                    const Tensor& tokens) {
  const shapes::EmbeddingDims s = shapes::embedding_backward(dtable, dout, tokens);
  cpu::embedding_backward(dtable.f32(), dout.f32(), tokens.i32(), s.n, s.v, s.d);
}

void CpuBackend::fill_zero(const Tensor& x) { cpu::fill_zero(x.f32(), x.numel()); }

double CpuBackend::sum_squares(const Tensor& x) { return cpu::sum_squares(x.f32(), x.numel()); }

void CpuBackend::adamw_step(const Tensor& master, const Tensor& param, const Tensor& grad,
                            const Tensor& m, const Tensor& v, const AdamWStep& step) {
  const int64_t n = shapes::adamw(master, param, grad, m, v);
  adamw_update(master.f32(), grad.f32(), m.f32(), v.f32(), n, step);
  // On the CPU the forward reads fp32 weights: copy unless param is the master itself.
  if (param.data != master.data) std::memcpy(param.f32(), master.f32(), master.nbytes());
}

}  // namespace ll
