// Tensor-core flash attention forward (see attention_tc.cuh): argument checks and the launch
// on a stream. The kernel and its launch sequence are in attention_tc_forward.cuh.
#include <cstdint>

#include "common/error.h"
#include "kernels/attention_mask.h"
#include "kernels/cuda/attention_args.h"
#include "kernels/cuda/attention_tc.cuh"
#include "kernels/cuda/attention_tc_forward.cuh"
#include "kernels/cuda/ew_device.cuh"
#include "kernels/cuda/kernel_launch.cuh"

namespace ll::cuda {
namespace {

using bf16 = __nv_bfloat16;

void check_args(int64_t n, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
                const AttnMask& mask) {
  check_attention_args(n, n_heads, n_kv_heads, head_dim, mask, "attention_forward_tc",
                       head_dim == 64 || head_dim == 128,
                       "64 or 128; attention_forward also takes 32", tc::fwd::kMaxTokens);
}

using host_detail::aligned16;

}  // namespace

void attention_forward_tc(bf16* out, float* lse, const bf16* q, const bf16* k, const bf16* v,
                          int64_t n_tokens, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
                          const AttnMask& mask, cudaStream_t stream) {
  check_args(n_tokens, n_heads, n_kv_heads, head_dim, mask);
  if (n_tokens == 0) return;
  LL_CHECK(out != nullptr && q != nullptr && k != nullptr && v != nullptr,
           "cuda attention_forward_tc: null tensor");
  LL_CHECK(aligned16(out) && aligned16(q) && aligned16(k) && aligned16(v),
           "cuda attention_forward_tc: q, k, v and out must be 16-byte aligned");
  tc::run_forward_tc(StreamLauncher{stream}, out, lse, q, k, v, int(n_tokens), int(n_heads),
                     int(n_kv_heads), int(head_dim), mask);
}

}  // namespace ll::cuda
