#pragma once
// The op interface the model code path calls. The CPU backend (fp32 reference) and the CUDA
// backend (bf16 storage, fp32 accumulation) implement the same signatures, so the block
// schedule in model/ is written once. Shapes are given by the Tensor views; each op checks
// the shapes it relies on.
#include <cstdint>
#include <string>
#include <vector>

#include "common/tensor.h"
#include "kernels/attention_pattern.h"
#include "kernels/backend_traits.h"
#include "kernels/rope_scaling.h"
#include "optim/adamw.h"

namespace ll {

// Memory of one backend: bytes of live tensors (as requested, what the memory plan counts),
// their high-water mark, and for a GPU what the device reports in use (all processes and
// the allocator's cached blocks) and in total; -1 where not applicable. Host tensors
// (allocate_host: offloaded activations) are counted apart, in host_in_use and host_peak.
struct BackendMemory {
  int64_t in_use = 0;
  int64_t peak = 0;
  int64_t device_used = -1;
  int64_t device_total = -1;
  int64_t host_in_use = 0;
  int64_t host_peak = 0;
};

// A copy started by Backend::copy_async, to be waited for with Backend::wait_copy.
struct CopyTicket {
  int64_t id = -1;
};

class Backend {
 public:
  virtual ~Backend() = default;
  // What this backend is (code branches on kind(), never on name()) and what it stores and
  // allocates (kernels/backend_traits.h); name() is for display.
  virtual BackendTraits traits() const = 0;
  BackendKind kind() const { return traits().kind; }
  std::string name() const { return std::string(backend_kind_name(kind())); }
  // The dtype activations and frozen weights are stored in (F32 on CPU, BF16 on CUDA).
  DType activation_dtype() const { return traits().activation_dtype; }
  virtual BackendMemory memory() const = 0;
  virtual void reset_peak() = 0;  // peak = in_use
  // Waits until every queued operation has finished (for timing; a no-op on the CPU).
  virtual void synchronize() {}
  // Makes `bytes` of memory available to this run up front (the CUDA backend grows its pool
  // to the memory plan's size before the weights load), so that a run that cannot fit fails
  // at once with the plan's numbers instead of at some step. A no-op on the CPU.
  virtual void reserve(int64_t bytes) {}

  // Memory: allocate uninitialised storage, copy from and to host fp32/int32.
  virtual OwnedTensor allocate(std::vector<int64_t> shape, DType dtype) = 0;
  virtual void upload_f32(const Tensor& dst, const float* src) = 0;    // converts to dst.dtype
  virtual void upload_i32(const Tensor& dst, const int32_t* src) = 0;  // dst.dtype I32
  virtual void download_f32(float* dst, const Tensor& src) = 0;        // converts from src.dtype

  // ---- Activation offload: host memory and copies beside the compute.
  // Host memory for tensors no op reads (saved activations moved off the device): pinned
  // (page-locked) on a GPU, so that copies run at full bus speed beside the kernels; ordinary
  // memory on the CPU. Counted in memory().host_in_use and host_peak, not in in_use.
  virtual OwnedTensor allocate_host(std::vector<int64_t> shape, DType dtype) = 0;
  // Copies src into dst (same shape and dtype; each in backend memory or from allocate_host)
  // after every op queued so far: on a GPU on a copy stream beside the compute, on the CPU at
  // once. Until wait_copy(ticket), ops queued later must not write src nor touch dst, and
  // neither may be freed.
  virtual CopyTicket copy_async(const Tensor& dst, const Tensor& src) = 0;
  // Every op queued after this call runs after the copy (on a GPU the compute stream waits
  // for the copy's event; the host does not block). Each ticket is waited for once.
  virtual void wait_copy(CopyTicket ticket) = 0;

  // out [N, D] = table [V, D] rows of tokens [N] (I32). Tokens outside [0, V) are an error.
  virtual void embedding_forward(const Tensor& out, const Tensor& table, const Tensor& tokens) = 0;
  // out [N, D] = rmsnorm(x [N, D]) * weight [D]; rstd [N] (F32) saved when non-null data.
  virtual void rmsnorm_forward(const Tensor& out, const Tensor& rstd, const Tensor& x,
                               const Tensor& weight, float eps) = 0;
  // out [M, Nout] (+)= alpha * x [M, K] @ w [Nout, K]^T
  virtual void matmul_forward(const Tensor& out, const Tensor& x, const Tensor& w, bool accumulate,
                              float alpha = 1.0f) = 0;
  // out [M, C] += bias [C] on every row (Qwen2's q/k/v biases, after matmul_forward). out in
  // activation_dtype() (fp32 add, rounded once); bias in activation_dtype() or F32.
  virtual void add_bias(const Tensor& out, const Tensor& bias) = 0;
  // In place on x [N, heads, hd]: token n at position p = position_offset + n, pair j rotated
  // by float(p) * freqs.inv_freq[j], cos/sin times freqs.attention_scaling (kernels/cpu/rope.h).
  virtual void rope_forward(const Tensor& x, int64_t position_offset,
                            const RopeFrequencies& freqs) = 0;
  // out [N, H, hd], lse [H, N] (F32, may have null data), q [N, H, hd], k/v [N, Hkv, hd].
  virtual void attention_forward(const Tensor& out, const Tensor& lse, const Tensor& q,
                                 const Tensor& k, const Tensor& v,
                                 const AttentionPattern& mask) = 0;
  // Inference with a key/value cache, dense causal: out [n, H, hd] for queries q [n, H, hd]
  // at positions [past, past + n) against k, v [past + n, Hkv, hd] (the cache's first
  // past + n rows); query i sees keys [0, past + i]. No log-sum-exp (no backward).
  virtual void attention_forward_cached(const Tensor& out, const Tensor& q, const Tensor& k,
                                        const Tensor& v, int64_t past) = 0;
  // out = silu(gate) * up, all [N, F].
  virtual void swiglu_forward(const Tensor& out, const Tensor& gate, const Tensor& up) = 0;
  // x += y
  virtual void add_inplace(const Tensor& x, const Tensor& y) = 0;
  // dst = src (same shape; same dtype, or an F32 src rounded to nearest even into a BF16 dst:
  // the sharded optimizer's gathered master weights into bf16 values)
  virtual void copy(const Tensor& dst, const Tensor& src) = 0;
  // losses [N] (F32) = CE(x [N, D] @ lm_head [V, D]^T, targets [N] I32; < 0 = unlabelled),
  // chunk_rows tokens at a time. Returns the number of labelled positions.
  virtual int64_t classifier_forward(const Tensor& losses, const Tensor& x, const Tensor& lm_head,
                                     const Tensor& targets, int64_t chunk_rows) = 0;

  // ---- Backward (training). Gradients of trainable parameters are F32 on every backend;
  // activation gradients are in activation_dtype(). "(+)=" means accumulate selects += or =.

  // classifier_forward plus dx [N, D] = d(loss_scale * sum of labelled losses) / dx, and
  // dlm_head [V, D] (F32, may have null data: lm_head frozen) += its gradient.
  virtual int64_t classifier_forward_backward(const Tensor& losses, const Tensor& dx,
                                              const Tensor& dlm_head, const Tensor& x,
                                              const Tensor& lm_head, const Tensor& targets,
                                              int64_t chunk_rows, float loss_scale) = 0;
  // dx [M, K] (+)= alpha * dout [M, Nout] @ w [Nout, K]
  virtual void matmul_backward_input(const Tensor& dx, const Tensor& dout, const Tensor& w,
                                     bool accumulate, float alpha = 1.0f) = 0;
  // dw [Nout, K] (F32) (+)= alpha * dout [M, Nout]^T @ x [M, K]
  virtual void matmul_backward_weight(const Tensor& dw, const Tensor& dout, const Tensor& x,
                                      bool accumulate, float alpha = 1.0f) = 0;
  // dbias [C] (F32) += column sums of dout [M, C]; deterministic (fixed summation order, no
  // atomics: the same bits every run).
  virtual void bias_backward(const Tensor& dbias, const Tensor& dout) = 0;
  // dx [N, D] += rmsnorm input gradient; dweight [D] (F32, may have null data) += its gradient.
  virtual void rmsnorm_backward(const Tensor& dx, const Tensor& dweight, const Tensor& dout,
                                const Tensor& x, const Tensor& weight, const Tensor& rstd) = 0;
  // In place on dx [N, heads, hd]: the transpose of rope_forward's rotation.
  virtual void rope_backward(const Tensor& dx, int64_t position_offset,
                             const RopeFrequencies& freqs) = 0;
  // dq [N, H, hd], dk/dv [N, Hkv, hd] (overwritten) from dout, q, k, v, out, lse of the forward.
  virtual void attention_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                                  const Tensor& dout, const Tensor& q, const Tensor& k,
                                  const Tensor& v, const Tensor& out, const Tensor& lse,
                                  const AttentionPattern& mask) = 0;
  // dgate, dup (overwritten; may alias gate, up) from dout, gate, up, all [N, F].
  virtual void swiglu_backward(const Tensor& dgate, const Tensor& dup, const Tensor& dout,
                               const Tensor& gate, const Tensor& up) = 0;
  // dtable [V, D] (F32) [tokens[n]] += dout [N, D][n]; deterministic.
  virtual void embedding_backward(const Tensor& dtable, const Tensor& dout,
                                  const Tensor& tokens) = 0;

  // ---- Optimizer support (F32 tensors).
  virtual void fill_zero(const Tensor& x) = 0;
  virtual double sum_squares(const Tensor& x) = 0;  // sum of x^2, for the gradient norm
  // One AdamW step on a flat parameter: master/grad/m/v [n] F32; param [n] in
  // activation_dtype() receives the updated master (it may be the master tensor itself).
  // grad_scale multiplies the gradient first (clipping and accumulation averaging).
  virtual void adamw_step(const Tensor& master, const Tensor& param, const Tensor& grad,
                          const Tensor& m, const Tensor& v, const AdamWStep& step) = 0;
};

}  // namespace ll
