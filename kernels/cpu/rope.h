#pragma once
#include <cstdint>
#include <vector>

namespace ll::cpu {

// Rotary position embedding, rotate-half form (pairs (j, j + hd/2)) as in HF Llama, in place.
// x: [N, heads, hd]. Token n sits at position (position_offset + n) / scale (linear position
// interpolation); frequency of pair j is theta^(-2j/hd). The fp32 angle is rounded exactly as
// transformers rounds it (see rope.cpp); cos/sin are taken in double, then rounded to fp32.
// The per-pair inverse frequencies [hd/2] (already divided by `scale`), rounded in fp32 as
// transformers forms them; the CUDA kernel's host side uses the same values.
std::vector<float> rope_inv_freq(int64_t head_dim, double scale, double theta);

void rope_forward(float* x, int64_t n_tokens, int64_t n_heads, int64_t head_dim,
                  int64_t position_offset, double scale, double theta);

// Backward of rope_forward (the transpose of the rotation: rotate by the negative angle),
// in place on the gradient dx [N, heads, hd], same positions and angles as the forward.
void rope_backward(float* dx, int64_t n_tokens, int64_t n_heads, int64_t head_dim,
                   int64_t position_offset, double scale, double theta);

}  // namespace ll::cpu
