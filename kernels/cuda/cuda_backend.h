#pragma once
// The CUDA backend: bf16 activations and frozen weights, fp32 trainable state (master weights,
// gradients, AdamW moments), fp32 accumulation everywhere. Thin adapters from the Backend
// interface to the kernels in kernels/cuda and cuBLASLt GEMMs (kernels/cuda/gemm.h).
//
// Everything is enqueued on one stream the backend owns; calls that return host values
// (download_f32, sum_squares, classifier_*, embedding_forward's id check) wait for it.
// copy_async runs on a second stream beside it (kernels/cuda/copy_stream.h), ordered by events;
// a tensor a copy reads or writes must not be freed before wait_copy(its ticket).
// Memory comes from the device's stream-ordered pool (cudaMallocAsync) with its release
// threshold raised, so the per-layer workspaces the model allocates and frees every step are
// recycled without cudaMalloc/cudaFree calls after the first step.
#include <memory>

#include "kernels/backend.h"

// As in CUDA's driver_types.h, so that host code including this header needs no CUDA headers.
typedef struct CUstream_st* cudaStream_t;

namespace ll {

class CudaBackend final : public Backend {
 public:
  // Uses GPU `device` and trains with the `attention` family (auto: attention_kernel_auto()),
  // resolved here once; throws ll::Error when the device does not exist, is older than sm_80
  // or cannot run that family (kernels/attention_kernel.h says why and what it can run).
  explicit CudaBackend(int device = 0, AttentionKernel attention = AttentionKernel::Auto);
  ~CudaBackend() override;

  BackendTraits traits() const override;
  BackendMemory memory() const override;
  void reset_peak() override;
  void synchronize() override;  // the compute and the copy stream
  void reserve(int64_t bytes) override;
  // "NVIDIA H100 80GB HBM3 (sm_90, 132 SMs, 79.1 GiB); attention: tc-sm90 (Hopper ...)"
  std::string device_description() const;
  // The GPU this backend runs on, and the stream every op is enqueued on: work on another stream
  // (NCCL's, engine/parallel/cuda/nccl_shard_transport.h) orders itself against it with CUDA
  // events.
  int device() const;
  cudaStream_t stream() const;

  OwnedTensor allocate(std::vector<int64_t> shape, DType dtype) override;
  void upload_f32(const Tensor& dst, const float* src) override;
  void upload_i32(const Tensor& dst, const int32_t* src) override;
  void download_f32(float* dst, const Tensor& src) override;
  // Pinned host memory (cudaHostAlloc), counted in memory().host_in_use / host_peak.
  OwnedTensor allocate_host(std::vector<int64_t> shape, DType dtype) override;
  // Between tensors of allocate() and allocate_host(), any direction, on the copy stream.
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
  // Same dtype: a device copy; F32 into BF16: rounded to nearest even (NaN stays NaN).
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
  struct State;
  // Shared with every tensor's deleter: the stream and pool outlive the last tensor.
  std::shared_ptr<State> st_;
  int64_t classifier(const Tensor& losses, const Tensor* dx, const Tensor* dlm_head,
                     const Tensor& x, const Tensor& lm_head, const Tensor& targets,
                     int64_t chunk_rows, float loss_scale);
};

}  // namespace ll
