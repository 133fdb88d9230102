#pragma once
// What GPUs this process can use. Safe to call on machines without a driver or GPU.
#include <cstdint>
#include <string>

namespace ll::cuda {

// Number of usable CUDA devices; 0 when there is no driver or no device (never throws).
int device_count();

struct DeviceInfo {
  std::string name;
  int sm_major = 0;
  int sm_minor = 0;
  int64_t total_bytes = 0;
  int64_t free_bytes = 0;
  int sm_count = 0;
};

// Throws ll::Error for an invalid index or a failing runtime call.
DeviceInfo device_info(int device);

}  // namespace ll::cuda
