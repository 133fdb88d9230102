// Conversions and fills on the GPU (see convert.cuh): argument checks and the launches on a
// stream. The kernels and their launch sequences are in convert_kernels.cuh.
#include "common/error.h"
#include "kernels/cuda/convert.cuh"
#include "kernels/cuda/convert_kernels.cuh"
#include "kernels/cuda/kernel_launch.cuh"

namespace ll::cuda {

namespace {

using detail::bf16;

void check_n(const char* op, int64_t n) {
  LL_CHECK(n >= 0, "{} (cuda): negative element count {}", op, n);
}

}  // namespace

void convert_f32_to_bf16(bf16* out, const float* in, int64_t n, cudaStream_t stream) {
  check_n("convert_f32_to_bf16", n);
  if (n == 0) return;
  convert_dev::run_convert_f32_to_bf16(StreamLauncher{stream}, out, in, n);
}

void convert_bf16_to_f32(float* out, const bf16* in, int64_t n, cudaStream_t stream) {
  check_n("convert_bf16_to_f32", n);
  if (n == 0) return;
  convert_dev::run_convert_bf16_to_f32(StreamLauncher{stream}, out, in, n);
}

void fill_f32(float* out, float value, int64_t n, cudaStream_t stream) {
  check_n("fill_f32", n);
  if (n == 0) return;
  convert_dev::run_fill_f32(StreamLauncher{stream}, out, value, n);
}

void fill_bf16(bf16* out, float value, int64_t n, cudaStream_t stream) {
  check_n("fill_bf16", n);
  if (n == 0) return;
  convert_dev::run_fill_bf16(StreamLauncher{stream}, out, value, n);
}

}  // namespace ll::cuda
