#pragma once
#include <cstdint>

#include "kernels/rope_scaling.h"

namespace ll::cpu {

// Rotary position embedding, rotate-half form (pairs (j, j + hd/2)) as in HF Llama, in place.
// x: [N, heads, hd]. Token n at position p = position_offset + n: pair j is rotated by the fp32
// angle float(p) * freqs.inv_freq[j] (kernels/rope_scaling.h computes inv_freq for each
// scaling type as transformers does), with cos and sin taken in double, rounded to fp32, then
// multiplied by freqs.attention_scaling in fp32 (transformers' order). freqs.inv_freq: [hd/2].
void rope_forward(float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim,
                  int64_t position_offset, const RopeFrequencies& freqs);

// Backward of rope_forward (the transpose: the negative angles, the same attention_scaling),
// in place on the gradient dx [N, heads, hd].
void rope_backward(float* dx, int64_t n_tokens, int64_t n_heads, int64_t head_dim,
                   int64_t position_offset, const RopeFrequencies& freqs);

}  // namespace ll::cpu
