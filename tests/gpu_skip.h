#pragma once
// GPU tests call require_gpu() first: on a machine without a usable CUDA device (or a build
// without the CUDA backend) the whole test binary exits with code 77, which ctest reports as
// "skipped", after one clear line saying why.
#include <cstdio>
#include <cstdlib>

#if defined(LL_HAVE_CUDA)
#include "kernels/cuda/device_info.h"
#endif

namespace ll::test {

// True in the emulated CUDA build (LL_CUDA_BACKEND_EMULATED, `make test-emulated`): the "GPU" is
// the SIMT emulator on the CPU, thousands of times slower, so tests skip their longest cases there
// (each with a message saying so).
inline bool emulated_gpu() {
#if defined(LL_CUDA_BACKEND_EMULATED)
  return true;
#else
  return false;
#endif
}

inline void require_gpu() {
#if defined(LL_HAVE_CUDA)
  if (ll::cuda::device_count() > 0) return;
  std::printf(
      "SKIP: no CUDA device on this machine; GPU tests need one (see scripts/gpu_check.sh)\n");
#else
  std::printf("SKIP: built without the CUDA backend (no nvcc found at configure time)\n");
#endif
  std::fflush(stdout);
  std::exit(77);
}

}  // namespace ll::test
