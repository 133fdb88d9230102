// Reductions on the GPU (see reduce.cuh): argument checks, scratch and the launches on a
// stream. The kernels and their launch sequence are in reduce_kernels.cuh.
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/kernel_launch.cuh"
#include "kernels/cuda/reduce.cuh"
#include "kernels/cuda/reduce_kernels.cuh"

namespace ll::cuda {

size_t sum_squares_scratch_bytes() { return size_t(reduce_dev::kPartials) * sizeof(double); }

void sum_squares(double* result, const float* x, int64_t n, double* scratch, cudaStream_t stream) {
  LL_CHECK(n >= 0, "sum_squares (cuda): negative element count {}", n);
  if (n == 0) {
    LL_CUDA_CHECK(cudaMemsetAsync(result, 0, sizeof(double), stream));
    return;
  }
  double* partial = scratch;  // [kPartials]
  if (partial == nullptr) {
    LL_CUDA_CHECK(
        cudaMallocAsync(reinterpret_cast<void**>(&partial), sum_squares_scratch_bytes(), stream));
  }
  reduce_dev::run_sum_squares(StreamLauncher{stream}, result, partial, x, n);
  if (scratch == nullptr) LL_CUDA_CHECK(cudaFreeAsync(partial, stream));
}

}  // namespace ll::cuda
