#pragma once
// Shared by the NCCL GPU tests (tests/engine/parallel/test_nccl_*_gpu.cpp): the skip rules.
#include <cstdio>
#include <cstdlib>

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

}  // namespace ll::test
