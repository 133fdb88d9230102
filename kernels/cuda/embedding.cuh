#pragma once
// Token embedding on the GPU: bf16 table, fp32 gradient table. Same semantics as
// ll::cpu::embedding_forward / embedding_backward (kernels/cpu/embedding.h), except that ids
// cannot be validated on the host without a copy: see check_token_ids and bad_id_flag.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace ll::cuda {

// Throws ll::Error naming the first position whose id is outside [0, vocab) and that id (the
// same message as the CPU backend). One small device->host copy: synchronizes `stream`.
// The engine calls it once per batch upload; the kernels below stay safe without it.
void check_token_ids(const int32_t* tokens, int64_t n_tokens, int64_t vocab, cudaStream_t stream);

// out[n, :] = table[tokens[n], :] (bf16 copy). out: [N, D], table: [V, D], tokens: [N]
// (device). An id outside [0, V) never reads outside the table: its row of out is zeroed and,
// when bad_id_flag (a device int) is not null, 1 is stored to *bad_id_flag (never cleared
// here; the caller zeroes it and checks it when convenient).
void embedding_forward(__nv_bfloat16* out, const __nv_bfloat16* table, const int32_t* tokens,
                       int64_t n_tokens, int64_t vocab, int64_t dim, int* bad_id_flag,
                       cudaStream_t stream);

// dtable[tokens[n], :] += dout[n, :] in fp32. dtable: [V, D] fp32, dout: [N, D] bf16.
// Deterministic and bit-identical to the CPU reference on the same inputs: each thread owns
// one column and adds the tokens in position order (no atomics). Ids outside [0, V) are
// skipped and flagged as in embedding_forward.
void embedding_backward(float* dtable, const __nv_bfloat16* dout, const int32_t* tokens,
                        int64_t n_tokens, int64_t vocab, int64_t dim, int* bad_id_flag,
                        cudaStream_t stream);

}  // namespace ll::cuda
