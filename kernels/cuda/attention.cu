// Tiled flash-style attention on CUDA cores (see attention.cuh): argument checks, the
// backward's workspace and the launches on a stream. The kernels and their launch sequences
// are in attention_kernels.cuh.
#include <cstdint>

#include "common/error.h"
#include "kernels/attention_pattern.h"
#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/attention_args.h"
#include "kernels/cuda/attention_kernels.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/kernel_launch.cuh"

namespace ll::cuda {
namespace {

using bf16 = __nv_bfloat16;

void check_args(int64_t n, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
                const AttentionPattern& mask, const char* op) {
  check_attention_args(n, n_heads, n_kv_heads, head_dim, mask, op,
                       head_dim == 32 || head_dim == 64 || head_dim == 128, "32, 64 or 128",
                       int64_t(INT32_MAX) * attn_dev::kB);
}

}  // namespace

void attention_forward(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v,
                       int64_t n_tokens, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
                       const AttentionPattern& mask, cudaStream_t stream) {
  check_args(n_tokens, n_heads, n_kv_heads, head_dim, mask, "attention_forward");
  if (n_tokens == 0) return;
  LL_CHECK(out != nullptr && q != nullptr && k != nullptr && v != nullptr,
           "cuda attention_forward: null tensor");
  attn_dev::run_forward(StreamLauncher{stream}, out, lse, q, k, v, n_tokens, int(n_heads),
                        int(n_kv_heads), head_dim, mask);
}

size_t attention_backward_workspace_bytes(int64_t n_tokens, int64_t n_heads) {
  return size_t(n_tokens) * size_t(n_heads) * sizeof(float);
}

void attention_backward(bf16* dq, bf16* dk, bf16* dv, const bf16* dout, const bf16* q,
                        const bf16* k, const bf16* v, const bf16* out, const float* lse,
                        int64_t n_tokens, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
                        const AttentionPattern& mask, void* workspace, cudaStream_t stream) {
  check_args(n_tokens, n_heads, n_kv_heads, head_dim, mask, "attention_backward");
  if (n_tokens == 0) return;
  LL_CHECK(dq != nullptr && dk != nullptr && dv != nullptr && dout != nullptr && q != nullptr &&
               k != nullptr && v != nullptr && out != nullptr && lse != nullptr,
           "cuda attention_backward: null tensor (lse is required)");
  void* scratch = workspace;
  if (scratch == nullptr)
    LL_CUDA_CHECK(
        cudaMallocAsync(&scratch, attention_backward_workspace_bytes(n_tokens, n_heads), stream));
  float* dvec = static_cast<float*>(scratch);
  attn_dev::run_backward(StreamLauncher{stream}, dq, dk, dv, dout, q, k, v, out, lse, dvec,
                         n_tokens, int(n_heads), int(n_kv_heads), head_dim, mask);
  if (workspace == nullptr) LL_CUDA_CHECK(cudaFreeAsync(scratch, stream));
}

}  // namespace ll::cuda
