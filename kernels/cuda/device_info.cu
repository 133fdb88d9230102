#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/device_info.h"

namespace ll::cuda {

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    (void)cudaGetLastError();  // clear the sticky "no driver" error
    return 0;
  }
  return n;
}

DeviceInfo device_info(int device) {
  const int n = device_count();
  LL_CHECK(device >= 0 && device < n, "CUDA device {} requested, {} available", device, n);
  cudaDeviceProp prop{};
  LL_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  LL_CUDA_CHECK(cudaSetDevice(device));
  size_t free_bytes = 0, total_bytes = 0;
  LL_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  DeviceInfo info;
  info.name = prop.name;
  info.sm_major = prop.major;
  info.sm_minor = prop.minor;
  info.total_bytes = int64_t(total_bytes);
  info.free_bytes = int64_t(free_bytes);
  info.sm_count = prop.multiProcessorCount;
  return info;
}

}  // namespace ll::cuda
