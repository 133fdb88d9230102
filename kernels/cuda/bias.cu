// Linear-layer bias on the GPU (see bias.cuh): argument checks, the scratch of the column sums
// and the launches on a stream. The kernels and their launch sequences are in bias_kernels.cuh.
#include "common/error.h"
#include "kernels/cuda/bias.cuh"
#include "kernels/cuda/bias_kernels.cuh"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/kernel_launch.cuh"

namespace ll::cuda {

namespace {

using detail::bf16;

// True when there is work; throws on a bad shape or a null pointer with work to do.
bool check_args(const char* op, const void* a, const void* b, int64_t rows, int64_t cols) {
  LL_CHECK(rows >= 0 && cols >= 0, "{} (cuda): bad shape [{}, {}]", op, rows, cols);
  if (rows == 0 || cols == 0) return false;
  LL_CHECK(a != nullptr && b != nullptr, "{} (cuda): null pointer", op);
  return true;
}

}  // namespace

void add_bias(bf16* out, const bf16* bias, int64_t rows, int64_t cols, cudaStream_t stream) {
  if (!check_args("add_bias", out, bias, rows, cols)) return;
  bias_dev::run_add_bias(StreamLauncher{stream}, out, bias, rows, cols);
}

void add_bias(bf16* out, const float* bias, int64_t rows, int64_t cols, cudaStream_t stream) {
  if (!check_args("add_bias", out, bias, rows, cols)) return;
  bias_dev::run_add_bias(StreamLauncher{stream}, out, bias, rows, cols);
}

size_t bias_backward_scratch_bytes(int64_t rows, int64_t cols) {
  if (rows <= 0 || cols <= 0) return 0;
  return size_t(bias_dev::sum_chunks(rows).n_chunks) * size_t(cols) * sizeof(double);
}

void bias_backward(float* dbias, const bf16* dout, int64_t rows, int64_t cols, double* scratch,
                   cudaStream_t stream) {
  if (!check_args("bias_backward", dbias, dout, rows, cols)) return;
  double* partial = scratch;  // [n_chunks, C]
  if (partial == nullptr) {
    LL_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&partial),
                                  bias_backward_scratch_bytes(rows, cols), stream));
  }
  bias_dev::run_bias_backward(StreamLauncher{stream}, dbias, partial, dout, rows, cols);
  if (scratch == nullptr) LL_CUDA_CHECK(cudaFreeAsync(partial, stream));
}

}  // namespace ll::cuda
