#pragma once
// Every CUDA runtime call and kernel launch goes through these: a failure becomes an
// ll::Error naming the call site (file:line) and the CUDA error string.
#include <cuda_runtime.h>

#include "common/error.h"

#define LL_CUDA_CHECK(call)                                                               \
  do {                                                                                    \
    cudaError_t ll_cuda_status_ = (call);                                                 \
    if (ll_cuda_status_ != cudaSuccess)                                                   \
      ::ll::fail("{}:{}: {} failed: {} ({})", __FILE__, __LINE__, #call,                  \
                 cudaGetErrorString(ll_cuda_status_), cudaGetErrorName(ll_cuda_status_)); \
  } while (0)

// After a <<<...>>> launch: catches bad launch configurations immediately.
#define LL_CUDA_CHECK_LAUNCH() LL_CUDA_CHECK(cudaGetLastError())
