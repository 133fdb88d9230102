#pragma once
// Shared by the NCCL GPU tests (tests/dist/test_nccl_*_gpu.cpp): the skip rules and the
// environment variable through which a test's mpirun children learn which case to run.
#include <cstdio>
#include <cstdlib>
#include <string>

#include "tests/gpu_skip.h"

namespace ll::test {

// GPU tests skip as a whole without a GPU; without NCCL in the build there is nothing to test.
inline void require_gpu_and_nccl() {
  require_gpu();
#if !defined(LL_HAVE_NCCL)
  std::printf("SKIP: built without NCCL (cmake/nccl.cmake found no libnccl / nccl.h)\n");
  std::fflush(stdout);
  std::exit(77);
#endif
}

// The child case named by `variable` ("" in the parent process).
inline std::string child_mode(const char* variable) {
  const char* mode = std::getenv(variable);
  return mode != nullptr ? mode : "";
}

}  // namespace ll::test
