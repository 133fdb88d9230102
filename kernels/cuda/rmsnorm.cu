// RMSNorm on the GPU (see rmsnorm.cuh): argument checks, the dweight scratch and the launches
// on a stream. The kernels and their launch sequences are in rmsnorm_kernels.cuh.
#include <climits>

#include "kernels/cuda/bf16_vector_device.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/kernel_launch.cuh"
#include "kernels/cuda/rmsnorm.cuh"
#include "kernels/cuda/rmsnorm_kernels.cuh"

namespace ll::cuda {

namespace {

using detail::bf16;

void check_shape(const char* op, int64_t n_rows, int64_t dim) {
  LL_CHECK(n_rows >= 0 && dim >= 1, "{}: bad shape [{}, {}]", op, n_rows, dim);
  LL_CHECK(n_rows <= int64_t(INT_MAX), "{}: {} rows exceed the grid limit", op, n_rows);
}

}  // namespace

void rmsnorm_forward(bf16* out, float* rstd, const bf16* x, const bf16* weight, int64_t n_rows,
                     int64_t dim, float eps, cudaStream_t stream) {
  check_shape("rmsnorm (cuda)", n_rows, dim);
  if (n_rows == 0) return;
  rmsnorm_dev::run_rmsnorm_forward(StreamLauncher{stream}, out, rstd, x, weight, n_rows, dim, eps);
}

size_t rmsnorm_backward_scratch_bytes(int64_t n_rows, int64_t dim) {
  if (n_rows <= 0 || dim <= 0) return 0;
  return size_t(rmsnorm_dev::dweight_chunks(n_rows).n_chunks) * size_t(dim) * sizeof(float);
}

void rmsnorm_backward(bf16* dx, float* dweight, const bf16* dout, const bf16* x, const bf16* weight,
                      const float* rstd, int64_t n_rows, int64_t dim, float* scratch,
                      cudaStream_t stream) {
  check_shape("rmsnorm_backward (cuda)", n_rows, dim);
  if (n_rows == 0) return;
  LL_CHECK(rmsnorm_dev::dweight_chunks(n_rows).n_chunks <= 65535,
           "rmsnorm_backward (cuda): too many chunks");
  float* partial = scratch;  // [n_chunks, D], only with dweight
  if (dweight != nullptr && partial == nullptr) {
    LL_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&partial),
                                  rmsnorm_backward_scratch_bytes(n_rows, dim), stream));
  }
  rmsnorm_dev::run_rmsnorm_backward(StreamLauncher{stream}, dx, dweight, partial, dout, x, weight,
                                    rstd, n_rows, dim);
  if (dweight != nullptr && scratch == nullptr) LL_CUDA_CHECK(cudaFreeAsync(partial, stream));
}

}  // namespace ll::cuda
