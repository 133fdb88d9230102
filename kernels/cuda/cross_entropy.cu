// Cross-entropy over one chunk of logits on the GPU (see cross_entropy.cuh): argument checks
// and the launch on a stream. The kernel and its launch sequence are in
// cross_entropy_kernels.cuh.
#include <climits>

#include "common/error.h"
#include "kernels/cuda/cross_entropy.cuh"
#include "kernels/cuda/cross_entropy_kernels.cuh"
#include "kernels/cuda/kernel_launch.cuh"

namespace ll::cuda {

void cross_entropy_chunk(float* losses, float* logits, const int32_t* targets, int64_t rows,
                         int64_t vocab, float loss_scale, bool write_grad, int* status,
                         cudaStream_t stream) {
  LL_CHECK(rows >= 0 && vocab >= 1 && vocab <= int64_t(INT_MAX) / 4,
           "cross_entropy_chunk (cuda): bad shape [{}, {}]", rows, vocab);
  if (rows == 0) return;
  LL_CHECK(losses != nullptr && logits != nullptr && targets != nullptr,
           "cross_entropy_chunk (cuda): null losses, logits or targets");
  cross_entropy_dev::run_cross_entropy_chunk(StreamLauncher{stream}, losses, logits, targets, rows,
                                             int(vocab), loss_scale, write_grad, status);
}

}  // namespace ll::cuda
