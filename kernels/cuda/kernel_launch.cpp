#include <map>
#include <mutex>
#include <utility>

#include "kernels/cuda/kernel_launch.cuh"

namespace ll::cuda::launch_detail {

void allow_dynamic_smem(const void* kernel, size_t smem) {
  int device = 0;
  LL_CUDA_CHECK(cudaGetDevice(&device));
  static std::mutex mutex;
  static std::map<std::pair<int, const void*>, size_t> allowed;  // (device, kernel) -> bytes
  const std::lock_guard<std::mutex> lock(mutex);
  size_t& bytes = allowed[{device, kernel}];
  if (smem <= bytes) return;
  LL_CUDA_CHECK(
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  bytes = smem;
}

}  // namespace ll::cuda::launch_detail
