// The probe of what the loaded device code was compiled for, and the per-device cache of
// attention_device_support (see attention_device_support.h).
#include <array>
#include <mutex>
#include <optional>

#include "common/error.h"
#include "kernels/cuda/attention_device_support.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/kernel_launch.cuh"
#include "kernels/cuda/sm90a_device_code.h"
#include "kernels/cuda/tensor_map.h"

namespace ll::cuda {
namespace {

// Writes 1 where the code the runtime picked for this device was compiled for sm_90a (the
// pass in which the Hopper kernels have bodies), else 0. One warp (the emulator runs whole
// warps), one writer.
__global__ void sm90a_code_probe_kernel(int* has_sm90a) {
  if (threadIdx.x == 0) *has_sm90a = LL_SM90A_DEVICE_CODE;
}

// One int of device memory, freed however the probe ends.
struct DeviceInt {
  int* p = nullptr;
  DeviceInt() { LL_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&p), sizeof(int))); }
  ~DeviceInt() { (void)cudaFree(p); }
  DeviceInt(const DeviceInt&) = delete;
  DeviceInt& operator=(const DeviceInt&) = delete;
};

bool loaded_code_has_sm90a() {
  DeviceInt flag;
  LL_CUDA_CHECK(cudaMemset(flag.p, 0, sizeof(int)));
  StreamLauncher{nullptr}("sm90a_code_probe_kernel", sm90a_code_probe_kernel, dim3(1), dim3(32), 0,
                          flag.p);
  int value = 0;
  LL_CUDA_CHECK(cudaMemcpy(&value, flag.p, sizeof(int), cudaMemcpyDeviceToHost));
  return value == 1;
}

AttentionDeviceSupport probe(int device) {
  AttentionDeviceSupport s;
  LL_CUDA_CHECK(cudaDeviceGetAttribute(&s.sm_major, cudaDevAttrComputeCapabilityMajor, device));
  LL_CUDA_CHECK(cudaDeviceGetAttribute(&s.sm_minor, cudaDevAttrComputeCapabilityMinor, device));
  s.denied = attention_kernels_denied_from_env();
  if (s.sm_major == 9) {  // only Hopper may run sm_90a code: elsewhere the probe can only say no
    int previous = 0;
    LL_CUDA_CHECK(cudaGetDevice(&previous));
    LL_CUDA_CHECK(cudaSetDevice(device));
    s.sm90a_code = loaded_code_has_sm90a();
    LL_CUDA_CHECK(cudaSetDevice(previous));
    s.tensor_map_encoder = tensor_map_encoder() != nullptr;
  }
  return s;
}

}  // namespace

AttentionDeviceSupport attention_device_support(int device) {
  static std::mutex mutex;
  static std::array<std::optional<AttentionDeviceSupport>, 64> cached;
  LL_CHECK(device >= 0 && device < int(cached.size()), "attention kernels: no GPU {}", device);
  const std::lock_guard<std::mutex> lock(mutex);
  std::optional<AttentionDeviceSupport>& slot = cached[size_t(device)];
  if (!slot) slot = probe(device);
  return *slot;
}

const AttentionDeviceSupport& current_attention_device_support() {
  int device = 0;
  LL_CUDA_CHECK(cudaGetDevice(&device));
  thread_local std::array<std::optional<AttentionDeviceSupport>, 64> local;
  LL_CHECK(device >= 0 && device < int(local.size()), "attention kernels: no GPU {}", device);
  std::optional<AttentionDeviceSupport>& slot = local[size_t(device)];
  if (!slot) slot = attention_device_support(device);
  return *slot;
}

bool hopper_attention_available() {
  return attention_kernel_available(AttentionKernel::TcSm90, current_attention_device_support());
}

}  // namespace ll::cuda
