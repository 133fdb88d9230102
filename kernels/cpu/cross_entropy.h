#pragma once
#include <cstdint>

namespace ll::cpu {

// Fused LM head + cross-entropy, computed chunk_rows tokens at a time so that the full
// [N, V] logits never exist: peak extra memory is chunk_rows * V floats (`scratch`,
// [min(chunk_rows, N), V], when the caller gives it; else allocated here).
// x: [N, D] final-normed hidden states, lm_head: [V, D], targets: [N] (a target < 0 means
// "no label": its loss is 0 and it is not counted). losses: [N] natural-log CE per position.
// Returns the number of labelled positions. Throws ll::Error for a target >= V, a non-finite
// logit at a labelled position, or chunk_rows < 1.
int64_t classifier_forward(float* losses, const float* x, const float* lm_head,
                           const int32_t* targets, int64_t n_tokens, int64_t dim, int64_t vocab,
                           int64_t chunk_rows, float* scratch = nullptr);

// classifier_forward plus the gradient of L = loss_scale * sum over labelled positions of
// losses[n]: dx [N, D] (overwritten; 0 at unlabelled rows) =
// loss_scale * (softmax(logits) - onehot(target)) @ lm_head, chunk by chunk, and, when
// dlm_head is non-null (lm_head trained: full pretraining), dlm_head [V, D] += that^T @ x.
// Same errors and return value as classifier_forward.
int64_t classifier_forward_backward(float* losses, float* dx, float* dlm_head, const float* x,
                                    const float* lm_head, const int32_t* targets, int64_t n_tokens,
                                    int64_t dim, int64_t vocab, int64_t chunk_rows,
                                    float loss_scale, float* scratch = nullptr);

}  // namespace ll::cpu
