#pragma once
// Element types that appear in model files and token shards, and conversions to fp32.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string_view>

namespace ll {

enum class DType : uint8_t { F32 = 0, F16 = 1, BF16 = 2, U16 = 3, U32 = 4, I32 = 5, I64 = 6 };

size_t dtype_size(DType t);
std::string_view dtype_name(DType t);  // "F32", "BF16", ... as in safetensors
// Parse a safetensors dtype name; returns false for names we do not support.
bool dtype_from_name(std::string_view name, DType* out);

inline float bf16_to_f32(uint16_t v) {
  uint32_t bits = uint32_t(v) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Round to nearest even; NaN stays NaN.
inline uint16_t f32_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return uint16_t((bits >> 16) | 0x40);
  uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
  return uint16_t((bits + rounding) >> 16);
}

float f16_to_f32(uint16_t v);
uint16_t f32_to_f16(float f);

// Convert n elements of a floating type (F32/F16/BF16) at src to fp32.
void convert_to_f32(DType src_type, const void* src, float* dst, size_t n);

}  // namespace ll
