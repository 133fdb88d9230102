// Cached (decode) attention (see attention_cached.cuh): argument checks, the workspace and the
// launches on a stream. The kernels, their plan and launch sequence are in
// attention_cached_kernels.cuh.
#include <cstdint>

#include "common/error.h"
#include "kernels/attention_pattern.h"
#include "kernels/cuda/attention.cuh"
#include "kernels/cuda/attention_args.h"
#include "kernels/cuda/attention_cached.cuh"
#include "kernels/cuda/attention_cached_kernels.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/kernel_launch.cuh"

namespace ll::cuda {
namespace {

using bf16 = __nv_bfloat16;

bool aligned4(const void* p) { return reinterpret_cast<uintptr_t>(p) % 4 == 0; }

}  // namespace

size_t attention_forward_cached_workspace_bytes(int64_t n_queries, int64_t past, int64_t n_heads,
                                                int64_t n_kv_heads, int64_t head_dim) {
  if (n_queries <= 0 || n_kv_heads <= 0 || n_heads % n_kv_heads != 0) return 0;
  if (past == 0 && n_queries > 1) return 0;  // the tiled kernel needs none
  const cached_dev::CachedPlan p = cached_dev::make_plan(n_queries, past, n_heads, n_kv_heads);
  if (p.splits == 1) return 0;
  return size_t(p.splits) * size_t(n_queries * n_heads) * size_t(head_dim + 2) * sizeof(float);
}

void attention_forward_cached(bf16* out, const bf16* q, const bf16* k, const bf16* v,
                              int64_t n_queries, int64_t past, int64_t n_heads, int64_t n_kv_heads,
                              int64_t head_dim, void* workspace, cudaStream_t stream) {
  const char* op = "attention_forward_cached";
  check_attention_args(n_queries, n_heads, n_kv_heads, head_dim,
                       AttentionPattern{AttnMode::Dense, n_queries, 0, n_heads}, op,
                       head_dim == 32 || head_dim == 64 || head_dim == 128, "32, 64 or 128",
                       int64_t(INT32_MAX));
  LL_CHECK(past >= 0, "cuda {}: {} cached tokens", op, past);
  if (n_queries == 0) return;
  LL_CHECK(out != nullptr && q != nullptr && k != nullptr && v != nullptr, "cuda {}: null tensor",
           op);
  LL_CHECK(aligned4(out) && aligned4(q) && aligned4(k) && aligned4(v),
           "cuda {}: tensors must be 4-byte aligned", op);
  if (past == 0 && n_queries > 1) {
    // A prompt into an empty cache: ordinary causal attention over its own keys.
    attention_forward(out, nullptr, q, k, v, n_queries, n_heads, n_kv_heads, head_dim,
                      AttentionPattern{AttnMode::Dense, n_queries, 0, n_heads}, stream);
    return;
  }
  const cached_dev::CachedPlan plan = cached_dev::make_plan(n_queries, past, n_heads, n_kv_heads);
  LL_CHECK(n_queries * n_kv_heads * plan.passes <= INT32_MAX,
           "cuda {}: {} queries x {} kv heads exceed the grid limit", op, n_queries, n_kv_heads);
  const size_t bytes =
      attention_forward_cached_workspace_bytes(n_queries, past, n_heads, n_kv_heads, head_dim);
  void* scratch = workspace;
  if (bytes > 0 && scratch == nullptr) LL_CUDA_CHECK(cudaMallocAsync(&scratch, bytes, stream));
  float* f = static_cast<float*>(scratch);
  cached_dev::run_cached(StreamLauncher{stream}, out, q, k, v, n_queries, past, int(n_heads),
                         int(n_kv_heads), head_dim, plan, f);
  if (bytes > 0 && workspace == nullptr) LL_CUDA_CHECK(cudaFreeAsync(scratch, stream));
}

}  // namespace ll::cuda
