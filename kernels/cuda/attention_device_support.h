#pragma once
// What the current GPU and this binary can run of the attention families
// (kernels/attention_kernel.h): compute capability, whether the loaded code really holds the
// Hopper kernels' sm_90a bodies (a one-time probe kernel: a build for plain sm_90 has the same
// binaryVersion but empty bodies), the driver's tensor-map encoder, and LL_ATTENTION_KERNEL_DENY.
// Decided once per device.
#include "kernels/attention_kernel.h"

namespace ll::cuda {

// For GPU `device` (cached; the first call per device launches the probe and waits for it).
AttentionDeviceSupport attention_device_support(int device);

// attention_device_support of the current device (cudaGetDevice).
const AttentionDeviceSupport& current_attention_device_support();

// Whether the current device runs the Hopper attention kernels (tc-sm90 available there).
bool hopper_attention_available();

}  // namespace ll::cuda
