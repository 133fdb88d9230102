#pragma once
// Conversions and fills on the GPU (for upload/download and initialization).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace ll::cuda {

// out[i] = bf16(in[i]), round to nearest even (NaN stays NaN). n elements, device pointers.
void convert_f32_to_bf16(__nv_bfloat16* out, const float* in, int64_t n, cudaStream_t stream);

// out[i] = float(in[i]) (exact).
void convert_bf16_to_f32(float* out, const __nv_bfloat16* in, int64_t n, cudaStream_t stream);

// out[i] = value.
void fill_f32(float* out, float value, int64_t n, cudaStream_t stream);

// out[i] = bf16(value), round to nearest even.
void fill_bf16(__nv_bfloat16* out, float value, int64_t n, cudaStream_t stream);

}  // namespace ll::cuda
