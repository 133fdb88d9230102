#pragma once
#include <cstdint>

namespace ll::cpu {

// out = silu(gate) * up, elementwise over n elements. out may alias gate or up.
void swiglu_forward(float* out, const float* gate, const float* up, int64_t n);

// Backward of out = silu(gate) * up: dgate, dup (overwritten) from dout, gate, up (all n
// elements). dgate may alias gate and dup may alias up (each input is read before its
// gradient is written at the same index); neither may alias dout.
void swiglu_backward(float* dgate, float* dup, const float* dout, const float* gate,
                     const float* up, int64_t n);

}  // namespace ll::cpu
