#include "kernels/cuda/reduce.cuh"

#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/ew_device.cuh"

namespace ll::cuda {

namespace {

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

}  // namespace

size_t sum_squares_scratch_bytes() { return size_t(kPartials) * sizeof(double); }

void sum_squares(double* result, const float* x, int64_t n, double* scratch,
                 cudaStream_t stream) {
  LL_CHECK(n >= 0, "sum_squares (cuda): negative element count {}", n);
  if (n == 0) {
    LL_CUDA_CHECK(cudaMemsetAsync(result, 0, sizeof(double), stream));
    return;
  }
  double* partial = scratch;  // [kPartials]
  if (partial == nullptr) {
    LL_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&partial),
                                  sum_squares_scratch_bytes(), stream));
  }
  // Fewer blocks for small n (depends on n only, so still deterministic).
  const int64_t want = host_detail::ceil_div(n, kThreads);
  const int blocks = int(want < kPartials ? want : kPartials);
  sum_squares_partial_kernel<<<unsigned(blocks), kThreads, 0, stream>>>(partial, x, n);
  LL_CUDA_CHECK_LAUNCH();
  sum_squares_final_kernel<<<1, kPartials, 0, stream>>>(result, partial, blocks);
  LL_CUDA_CHECK_LAUNCH();
  if (scratch == nullptr) LL_CUDA_CHECK(cudaFreeAsync(partial, stream));
}

}  // namespace ll::cuda
