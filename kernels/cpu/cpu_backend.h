#pragma once
// The fp32 reference backend: thin adapters from the Backend interface to kernels/cpu.
#include <memory>
#include <unordered_set>

#include "kernels/backend.h"

namespace ll {

class CpuBackend final : public Backend {
 public:
  // Bytes of tensors allocated and not yet freed, and the highest value since reset_peak()
  // (requested sizes; what the memory plan predicts).
  int64_t bytes_in_use() const { return stats_->in_use; }
  int64_t peak_bytes() const { return stats_->peak; }
  void reset_peak() override {
    stats_->peak = stats_->in_use;
    host_stats_->peak = host_stats_->in_use;
  }
  BackendMemory memory() const override {
    return {stats_->in_use, stats_->peak, -1, -1, host_stats_->in_use, host_stats_->peak};
  }

  BackendTraits traits() const override { return backend_traits(BackendKind::Cpu); }
  OwnedTensor allocate(std::vector<int64_t> shape, DType dtype) override;
  void upload_f32(const Tensor& dst, const float* src) override;
  void upload_i32(const Tensor& dst, const int32_t* src) override;
  void download_f32(float* dst, const Tensor& src) override;
  // Host memory is this backend's memory: allocate_host only counts it apart, and copy_async
  // copies at once (offload is a no-op here that runs the same schedule).
  OwnedTensor allocate_host(std::vector<int64_t> shape, DType dtype) override;
  CopyTicket copy_async(const Tensor& dst, const Tensor& src) override;
  void wait_copy(CopyTicket ticket) override;
  void embedding_forward(const Tensor& out, const Tensor& table, const Tensor& tokens) override;
  void rmsnorm_forward(const Tensor& out, const Tensor& rstd, const Tensor& x, const Tensor& weight,
                       float eps) override;
  void matmul_forward(const Tensor& out, const Tensor& x, const Tensor& w, bool accumulate,
                      float alpha = 1.0f) override;
  void add_bias(const Tensor& out, const Tensor& bias) override;
  void rope_forward(const Tensor& x, int64_t position_offset,
                    const RopeFrequencies& freqs) override;
  void attention_forward(const Tensor& out, const Tensor& lse, const Tensor& q, const Tensor& k,
                         const Tensor& v, const AttentionPattern& mask) override;
  void attention_forward_cached(const Tensor& out, const Tensor& q, const Tensor& k,
                                const Tensor& v, int64_t past) override;
  void swiglu_forward(const Tensor& out, const Tensor& gate, const Tensor& up) override;
  void add_inplace(const Tensor& x, const Tensor& y) override;
  void copy(const Tensor& dst, const Tensor& src) override;
  int64_t classifier_forward(const Tensor& losses, const Tensor& x, const Tensor& lm_head,
                             const Tensor& targets, int64_t chunk_rows) override;

  int64_t classifier_forward_backward(const Tensor& losses, const Tensor& dx,
                                      const Tensor& dlm_head, const Tensor& x,
                                      const Tensor& lm_head, const Tensor& targets,
                                      int64_t chunk_rows, float loss_scale) override;
  void matmul_backward_input(const Tensor& dx, const Tensor& dout, const Tensor& w, bool accumulate,
                             float alpha = 1.0f) override;
  void matmul_backward_weight(const Tensor& dw, const Tensor& dout, const Tensor& x,
                              bool accumulate, float alpha = 1.0f) override;
  void bias_backward(const Tensor& dbias, const Tensor& dout) override;
  void rmsnorm_backward(const Tensor& dx, const Tensor& dweight, const Tensor& dout,
                        const Tensor& x, const Tensor& weight, const Tensor& rstd) override;
  void rope_backward(const Tensor& dx, int64_t position_offset,
                     const RopeFrequencies& freqs) override;
  void attention_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv, const Tensor& dout,
                          const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                          const Tensor& lse, const AttentionPattern& mask) override;
  void swiglu_backward(const Tensor& dgate, const Tensor& dup, const Tensor& dout,
                       const Tensor& gate, const Tensor& up) override;
  void embedding_backward(const Tensor& dtable, const Tensor& dout, const Tensor& tokens) override;
  void fill_zero(const Tensor& x) override;
  double sum_squares(const Tensor& x) override;
  void adamw_step(const Tensor& master, const Tensor& param, const Tensor& grad, const Tensor& m,
                  const Tensor& v, const AdamWStep& step) override;

 private:
  struct AllocStats {
    int64_t in_use = 0;
    int64_t peak = 0;
  };
  // Shared with every tensor's deleter, so tensors may outlive the backend object.
  std::shared_ptr<AllocStats> stats_ = std::make_shared<AllocStats>();
  std::shared_ptr<AllocStats> host_stats_ = std::make_shared<AllocStats>();  // allocate_host
  // copy_async's tickets: how many were handed out, and those not waited for yet.
  int64_t copies_started_ = 0;
  std::unordered_set<int64_t> copies_waiting_;
  // The classifier's logits of one chunk, [min(chunk_rows, n), V] F32 (none when n is 0).
  OwnedTensor classifier_scratch(int64_t n, int64_t v, int64_t chunk_rows);
  OwnedTensor allocate_counted(std::vector<int64_t> shape, DType dtype,
                               const std::shared_ptr<AllocStats>& stats);
};

}  // namespace ll
