#pragma once
// The block's dynamic shared memory (the launch's smem bytes), 128-byte aligned, as a typed
// pointer. Kernels call this instead of declaring `extern __shared__` themselves so that the
// SIMT emulator (LL_SIMT_EMULATOR_DEVICE_CODE, tests/cuda_emu) can supply its own.
#include <cuda_runtime.h>

#if defined(LL_SIMT_EMULATOR_DEVICE_CODE)
#include "tests/cuda_emu/simt_emulator.h"
#endif

namespace ll::cuda {

#if !defined(LL_SIMT_EMULATOR_DEVICE_CODE)
template <typename T = unsigned char>
__device__ __forceinline__ T* dynamic_smem() {
  extern __shared__ __align__(128) unsigned char ll_dynamic_smem[];
  return reinterpret_cast<T*>(ll_dynamic_smem);
}
#else
template <typename T = unsigned char>
inline T* dynamic_smem() {
  return reinterpret_cast<T*>(emu::dynamic_smem());
}
#endif

}  // namespace ll::cuda
