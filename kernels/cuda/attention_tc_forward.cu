// Tensor-core flash attention forward (see attention_tc.cuh): argument checks, the choice
// between the Hopper kernel (attention_tc_forward_sm90.cuh) and the mma.sync one
// (attention_tc.cuh), and the launch on a stream.
#include <cstdint>

#include "common/error.h"
#include "kernels/attention_pattern.h"
#include "kernels/cuda/attention_args.h"
#include "kernels/cuda/attention_device_support.h"
#include "kernels/cuda/attention_tc.cuh"
#include "kernels/cuda/attention_tc_forward_kernels.cuh"
#include "kernels/cuda/attention_tc_forward_sm90_kernels.cuh"
#include "kernels/cuda/bf16_vector_device.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/kernel_launch.cuh"
#include "kernels/cuda/tensor_map.h"

namespace ll::cuda {
namespace {

using bf16 = __nv_bfloat16;

void check_args(int64_t n, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
                const AttentionPattern& mask) {
  check_attention_args(n, n_heads, n_kv_heads, head_dim, mask, "attention_forward_tc",
                       head_dim == 64 || head_dim == 128,
                       "64 or 128; attention_forward also takes 32", tc::fwd::kMaxTokens);
}

using host_detail::aligned16;

void check_pointers(const bf16* out, const bf16* q, const bf16* k, const bf16* v) {
  LL_CHECK(out != nullptr && q != nullptr && k != nullptr && v != nullptr,
           "cuda attention_forward_tc: null tensor");
  LL_CHECK(aligned16(out) && aligned16(q) && aligned16(k) && aligned16(v),
           "cuda attention_forward_tc: q, k, v and out must be 16-byte aligned");
}

}  // namespace

bool attention_tc_uses_hopper(const AttentionPattern& mask) {
  return mask.mode != AttnMode::S2Roll && hopper_attention_available();
}

void attention_forward_tc_sm80(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v,
                               int64_t n_tokens, int64_t n_heads, int64_t n_kv_heads,
                               int64_t head_dim, const AttentionPattern& mask,
                               cudaStream_t stream) {
  check_args(n_tokens, n_heads, n_kv_heads, head_dim, mask);
  if (n_tokens == 0) return;
  check_pointers(out, q, k, v);
  tc::run_forward_tc(StreamLauncher{stream}, out, lse, q, k, v, int(n_tokens), int(n_heads),
                     int(n_kv_heads), int(head_dim), mask);
}

void attention_forward_tc(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v,
                          int64_t n_tokens, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
                          const AttentionPattern& mask, cudaStream_t stream) {
  check_args(n_tokens, n_heads, n_kv_heads, head_dim, mask);
  if (n_tokens == 0) return;
  check_pointers(out, q, k, v);
  if (attention_tc_uses_hopper(mask)) {
    const bool ok = tc::sm90::run_forward_sm90(StreamLauncher{stream}, tensor_map_encoder(), out,
                                               lse, q, k, v, int(n_tokens), int(n_heads),
                                               int(n_kv_heads), int(head_dim), mask);
    LL_CHECK(ok,
             "cuda attention_forward_tc: the driver rejected a tensor map (N {}, H {}, Hkv {}, "
             "hd {})",
             n_tokens, n_heads, n_kv_heads, head_dim);
    return;
  }
  tc::run_forward_tc(StreamLauncher{stream}, out, lse, q, k, v, int(n_tokens), int(n_heads),
                     int(n_kv_heads), int(head_dim), mask);
}

}  // namespace ll::cuda
