#pragma once
#include <cstdint>

namespace ll::cpu {

// out[n, :] = table[tokens[n], :]. out: [N, D], table: [V, D], tokens: [N].
// Throws ll::Error when a token is outside [0, V).
void embedding_forward(float* out, const float* table, const int32_t* tokens, int64_t n_tokens,
                       int64_t vocab, int64_t dim);

// dtable[tokens[n], :] += dout[n, :]. dtable: [V, D], dout: [N, D]. Deterministic (the
// same order of additions every run). Throws ll::Error for a token outside [0, V).
void embedding_backward(float* dtable, const float* dout, const int32_t* tokens, int64_t n_tokens,
                        int64_t vocab, int64_t dim);

}  // namespace ll::cpu
