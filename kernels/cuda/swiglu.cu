// SwiGLU on the GPU (see swiglu.cuh): argument checks and the launches on a stream. The kernels
// and their launch sequences are in swiglu_kernels.cuh.
#include "common/error.h"
#include "kernels/cuda/kernel_launch.cuh"
#include "kernels/cuda/swiglu.cuh"
#include "kernels/cuda/swiglu_kernels.cuh"

namespace ll::cuda {

using detail::bf16;

void swiglu_forward(bf16* out, const bf16* gate, const bf16* up, int64_t n, cudaStream_t stream) {
  LL_CHECK(n >= 0, "swiglu (cuda): negative element count {}", n);
  if (n == 0) return;
  swiglu_dev::run_swiglu_forward(StreamLauncher{stream}, out, gate, up, n);
}

void swiglu_backward(bf16* dgate, bf16* dup, const bf16* dout, const bf16* gate, const bf16* up,
                     int64_t n, cudaStream_t stream) {
  LL_CHECK(n >= 0, "swiglu_backward (cuda): negative element count {}", n);
  if (n == 0) return;
  swiglu_dev::run_swiglu_backward(StreamLauncher{stream}, dgate, dup, dout, gate, up, n);
}

}  // namespace ll::cuda
