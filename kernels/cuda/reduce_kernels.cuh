#pragma once
// sum_squares kernels (see reduce.cuh) and their host launch sequence. Internal: included by
// reduce.cu (nvcc) and by the SIMT emulator tests (tests/kernels/cuda/emu, host compiler after
// tests/cuda_emu/cuda_prelude.h), which run the same kernels and sequence.
//
// Two passes, deterministic: min(ceil(n / 256), 512) blocks of 256 threads each sum a fixed
// grid-stride subset of x^2 in double (fma, then a fixed-order block reduction) into
// partial [blocks]; one block of 512 threads sums the partials in a fixed order.
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/cuda/bf16_vector_device.cuh"

namespace ll::cuda::reduce_dev {

constexpr int kThreads = 256;
constexpr int kPartials = 512;  // first-pass blocks (fixed: the result must not depend on
                                // the device); also the second pass's block size

// partial[b] = sum of x[i]^2 over this block's grid-stride subset (blocks = gridDim.x).
__global__ void __launch_bounds__(kThreads)
    sum_squares_partial_kernel(double* partial, const float* x, int64_t n) {
  __shared__ double red[32];
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  double acc = 0.0;
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < n; i += stride) {
    const double xv = double(x[i]);
    acc = fma(xv, xv, acc);  // xv * xv is exact in double; fma rounds the sum only
  }
  acc = detail::block_sum<kThreads>(acc, red);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

__global__ void __launch_bounds__(kPartials)
    sum_squares_final_kernel(double* result, const double* partial, int n_partials) {
  __shared__ double red[32];
  double v = int(threadIdx.x) < n_partials ? partial[threadIdx.x] : 0.0;
  v = detail::block_sum<kPartials>(v, red);
  if (threadIdx.x == 0) *result = v;
}

// The launch sequence of sum_squares after its argument checks (n >= 1). partial: [kPartials]
// double scratch.
template <typename Launcher>
void run_sum_squares(const Launcher& launch, double* result, double* partial, const float* x,
                     int64_t n) {
  // Fewer blocks for small n (depends on n only, so still deterministic).
  const int64_t want = host_detail::ceil_div(n, kThreads);
  const int blocks = int(want < kPartials ? want : kPartials);
  launch("sum_squares_partial_kernel", sum_squares_partial_kernel, dim3(unsigned(blocks)),
         dim3(kThreads), size_t(0), partial, x, n);
  launch("sum_squares_final_kernel", sum_squares_final_kernel, dim3(1), dim3(kPartials), size_t(0),
         result, partial, blocks);
}

}  // namespace ll::cuda::reduce_dev
