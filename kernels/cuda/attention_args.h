#pragma once
// Argument checks shared by the CUDA attention launchers (the CUDA-core kernels in
// attention.cu and the tensor-core ones in attention_tc*.cu): host-only, ll::Error messages
// naming the launcher.
#include <cstdint>

#include "common/error.h"
#include "kernels/attention_pattern.h"

namespace ll::cuda {

// head_dim must be one of `head_dims` (a description like "64 or 128" names them in the
// message); n at most max_tokens; heads split into kv groups; the mask matches the call.
inline void check_attention_args(int64_t n, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim,
                                 const AttentionPattern& mask, const char* op, bool head_dim_ok,
                                 const char* head_dims, int64_t max_tokens) {
  LL_CHECK(head_dim_ok, "cuda {}: head_dim {} is not supported ({})", op, head_dim, head_dims);
  LL_CHECK(n >= 0, "cuda {}: negative token count {}", op, n);
  LL_CHECK(n_heads > 0 && n_kv_heads > 0 && n_heads % n_kv_heads == 0,
           "cuda {}: {} query heads do not split into groups over {} kv heads", op, n_heads,
           n_kv_heads);
  LL_CHECK(n_heads <= 65535, "cuda {}: {} heads exceed the grid limit", op, n_heads);
  LL_CHECK(mask.seq_len == n && mask.n_heads == n_heads,
           "cuda {}: mask is for N={}, H={} but the call has N={}, H={}", op, mask.seq_len,
           mask.n_heads, n, n_heads);
  if (mask.mode != AttnMode::Dense) {
    LL_CHECK(mask.mode == AttnMode::S2 || mask.mode == AttnMode::S2Roll,
             "cuda {}: unknown mask mode {}", op, int(mask.mode));
    LL_CHECK(n_heads % 2 == 0, "cuda {}: S2-Attn needs an even number of heads, got {}", op,
             n_heads);
    LL_CHECK(mask.group_size >= 2 && mask.group_size % 2 == 0,
             "cuda {}: S2 group size {} must be even and at least 2", op, mask.group_size);
  }
  LL_CHECK(n <= max_tokens, "cuda {}: {} tokens is too many (at most {})", op, n, max_tokens);
}

}  // namespace ll::cuda
