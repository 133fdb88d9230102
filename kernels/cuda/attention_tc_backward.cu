// Tensor-core flash attention backward (see attention_tc.cuh): argument checks, the
// workspace, the choice between the Hopper kernels (attention_tc_backward_sm90.cuh) and the
// mma.sync ones (attention_tc_backward.cuh), and the launches on a stream.
#include <cstdint>
#include <optional>

#include "common/error.h"
#include "kernels/attention_pattern.h"
#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/attention_args.h"
#include "kernels/cuda/attention_device_support.h"
#include "kernels/cuda/attention_tc.cuh"
#include "kernels/cuda/attention_tc_backward_kernels.cuh"
#include "kernels/cuda/attention_tc_backward_sm90_kernels.cuh"
#include "kernels/cuda/bf16_vector_device.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/kernel_launch.cuh"
#include "kernels/cuda/tensor_map.h"

namespace ll::cuda {
namespace {

using bf16 = __nv_bfloat16;

void check_args(int64_t n, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
                const AttentionPattern& mask) {
  check_attention_args(n, n_heads, n_kv_heads, head_dim, mask, "attention_backward_tc",
                       head_dim == 64 || head_dim == 128,
                       "64 or 128; attention_backward also takes 32", tc::bwd::kMaxTokens);
}

using host_detail::aligned16;

// Offset of the atomic dQ accumulator in the workspace (after D, [H, N] fp32).
size_t dq_accum_offset(int64_t n_tokens, int64_t n_heads) {
  return (attention_backward_workspace_bytes(n_tokens, n_heads) + 255) & ~size_t(255);
}

enum class DqOrder { Deterministic, Atomic };

// Device scratch from the stream-ordered pool, returned however the launch ends.
class AsyncScratch {
 public:
  AsyncScratch(size_t bytes, cudaStream_t stream) : stream_(stream) {
    LL_CUDA_CHECK(cudaMallocAsync(&p_, bytes, stream));
  }
  ~AsyncScratch() {
    if (p_ != nullptr) (void)cudaFreeAsync(p_, stream_);  // unwinding: report nothing
  }
  AsyncScratch(const AsyncScratch&) = delete;
  AsyncScratch& operator=(const AsyncScratch&) = delete;
  void* get() const { return p_; }
  void release() {  // the normal path: the free is checked
    void* p = p_;
    p_ = nullptr;
    LL_CUDA_CHECK(cudaFreeAsync(p, stream_));
  }

 private:
  void* p_ = nullptr;
  cudaStream_t stream_;
};

void backward(bool allow_hopper, DqOrder order, bf16* dq, bf16* dk, bf16* dv, const bf16* dout,
              const bf16* q, const bf16* k, const bf16* v, const bf16* out, const float* lse,
              int64_t n_tokens, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
              const AttentionPattern& mask, void* workspace, cudaStream_t stream) {
  check_args(n_tokens, n_heads, n_kv_heads, head_dim, mask);
  if (n_tokens == 0) return;
  LL_CHECK(dq != nullptr && dk != nullptr && dv != nullptr && dout != nullptr && q != nullptr &&
               k != nullptr && v != nullptr && out != nullptr && lse != nullptr,
           "cuda attention_backward_tc: null tensor (lse is required)");
  LL_CHECK(aligned16(dq) && aligned16(dk) && aligned16(dv) && aligned16(dout) && aligned16(q) &&
               aligned16(k) && aligned16(v) && aligned16(out),
           "cuda attention_backward_tc: dq, dk, dv, dout, q, k, v and out must be 16-byte "
           "aligned");
  // The contract (workspace size and alignment) is the caller's choice, the kernels may fall back
  // (LL_ATTENTION_KERNEL_DENY=tc-sm90-atomic-dq: the GPU check's fallback should the atomic
  // kernel fail on a device, scripts/gpu_check.sh).
  const bool atomic_contract = order == DqOrder::Atomic;
  const bool atomic =
      atomic_contract && attention_kernel_available(AttentionKernel::TcSm90AtomicDq,
                                                    current_attention_device_support());
  LL_CHECK((reinterpret_cast<uintptr_t>(workspace) & (atomic_contract ? 15u : 3u)) == 0,
           "cuda attention_backward_tc: workspace must be {}-byte aligned",
           atomic_contract ? 16 : 4);
  std::optional<AsyncScratch> owned;
  if (workspace == nullptr)
    owned.emplace(atomic
                      ? attention_backward_tc_atomic_dq_workspace_bytes(n_tokens, n_heads, head_dim)
                      : attention_backward_workspace_bytes(n_tokens, n_heads),
                  stream);
  void* scratch = owned ? owned->get() : workspace;
  float* dvec = static_cast<float*>(scratch);
  float* dq_accum = atomic ? reinterpret_cast<float*>(static_cast<unsigned char*>(scratch) +
                                                      dq_accum_offset(n_tokens, n_heads))
                           : nullptr;
  bool ok = true;  // false: the driver rejected a tensor map (nothing launched)
  if (allow_hopper && attention_tc_uses_hopper(mask))
    ok = tc::sm90::run_backward_sm90(StreamLauncher{stream}, tensor_map_encoder(), dq, dk, dv, dout,
                                     q, k, v, out, lse, dvec, dq_accum, int(n_tokens), int(n_heads),
                                     int(n_kv_heads), int(head_dim), mask);
  else
    tc::run_backward_tc(StreamLauncher{stream}, dq, dk, dv, dout, q, k, v, out, lse, dvec,
                        int(n_tokens), int(n_heads), int(n_kv_heads), int(head_dim), mask);
  if (owned) owned->release();
  LL_CHECK(
      ok,
      "cuda attention_backward_tc: the driver rejected a tensor map (N {}, H {}, Hkv {}, hd {})",
      n_tokens, n_heads, n_kv_heads, head_dim);
}

}  // namespace

void attention_backward_tc(bf16* dq, bf16* dk, bf16* dv, const bf16* dout, const bf16* q,
                           const bf16* k, const bf16* v, const bf16* out, const float* lse,
                           int64_t n_tokens, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
                           const AttentionPattern& mask, void* workspace, cudaStream_t stream) {
  backward(true, DqOrder::Deterministic, dq, dk, dv, dout, q, k, v, out, lse, n_tokens, n_heads,
           n_kv_heads, head_dim, mask, workspace, stream);
}

void attention_backward_tc_sm80(bf16* dq, bf16* dk, bf16* dv, const bf16* dout, const bf16* q,
                                const bf16* k, const bf16* v, const bf16* out, const float* lse,
                                int64_t n_tokens, int64_t n_heads, int64_t n_kv_heads,
                                int64_t head_dim, const AttentionPattern& mask, void* workspace,
                                cudaStream_t stream) {
  backward(false, DqOrder::Deterministic, dq, dk, dv, dout, q, k, v, out, lse, n_tokens, n_heads,
           n_kv_heads, head_dim, mask, workspace, stream);
}

size_t attention_backward_tc_atomic_dq_workspace_bytes(int64_t n_tokens, int64_t n_heads,
                                                       int64_t head_dim) {
  return dq_accum_offset(n_tokens, n_heads) +
         size_t(n_tokens) * size_t(n_heads) * size_t(head_dim) * sizeof(float);
}

void attention_backward_tc_atomic_dq(bf16* dq, bf16* dk, bf16* dv, const bf16* dout, const bf16* q,
                                     const bf16* k, const bf16* v, const bf16* out,
                                     const float* lse, int64_t n_tokens, int64_t n_heads,
                                     int64_t n_kv_heads, int64_t head_dim,
                                     const AttentionPattern& mask, void* workspace,
                                     cudaStream_t stream) {
  backward(true, DqOrder::Atomic, dq, dk, dv, dout, q, k, v, out, lse, n_tokens, n_heads,
           n_kv_heads, head_dim, mask, workspace, stream);
}

}  // namespace ll::cuda
