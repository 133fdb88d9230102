#pragma once
// Reductions on the GPU.
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace ll::cuda {

// Bytes of scratch sum_squares needs (a fixed number of doubles, independent of n).
size_t sum_squares_scratch_bytes();

// *result (device double) = sum of x[i]^2 over n fp32 elements, each square and every
// addition in double. Deterministic (bitwise the same every run for the same n): a fixed
// number of blocks, each summing a fixed grid-stride subset into scratch, then one block
// summing the partials in a fixed order. scratch: sum_squares_scratch_bytes() of device
// memory, or null (then cudaMallocAsync / cudaFreeAsync on `stream`). n == 0 writes 0.
void sum_squares(double* result, const float* x, int64_t n, double* scratch, cudaStream_t stream);

}  // namespace ll::cuda
