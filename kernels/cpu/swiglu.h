#pragma once
#include <cstdint>

namespace ll::cpu {

// out = silu(gate) * up, elementwise over n elements. out may alias gate or up.
void swiglu_forward(float* out, const float* gate, const float* up, int64_t n);

}  // namespace ll::cpu
