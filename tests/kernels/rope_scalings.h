#pragma once
// RoPE scalings of each type for the rope kernel tests (kernels/rope_scaling.h), with the
// parameters real models ship (Llama-3.1's llama3, Qwen2.5's yarn).
#include <cstdint>

#include "kernels/rope_scaling.h"

namespace ll::test {

inline RopeScaling dynamic_rope(double factor) {
  RopeScaling s;
  s.type = RopeType::Dynamic;
  s.factor = factor;
  return s;
}

inline RopeScaling yarn_rope(double factor, int64_t original) {
  RopeScaling s;
  s.type = RopeType::Yarn;
  s.factor = factor;
  s.original_max_position_embeddings = original;
  return s;
}

// Llama-3.1: low 1, high 4 (the struct's defaults).
inline RopeScaling llama3_rope(double factor, int64_t original) {
  RopeScaling s;
  s.type = RopeType::Llama3;
  s.factor = factor;
  s.original_max_position_embeddings = original;
  return s;
}

// Linear position interpolation (factor 1: plain RoPE); the frequencies at head_dim and theta.
inline RopeFrequencies linear_freqs(int64_t head_dim, double factor, double theta) {
  return rope_frequencies(linear_rope_scaling(factor), theta, head_dim, 0, 0);
}

}  // namespace ll::test
