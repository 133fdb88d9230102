// Looks up cuTensorMapEncodeTiled through the runtime (see tensor_map.h).
#include "kernels/cuda/tensor_map.h"

#include <cuda_runtime.h>

namespace ll::cuda {

TensorMapEncodeFn tensor_map_encoder() {
  static const TensorMapEncodeFn fn = [] {
    void* p = nullptr;
    cudaDriverEntryPointQueryResult found = cudaDriverEntryPointSymbolNotFound;
    // The v12000 signature (the only one so far), whatever the driver's version.
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &p, 12000, cudaEnableDefault,
                                         &found) != cudaSuccess ||
        found != cudaDriverEntryPointSuccess) {
      (void)cudaGetLastError();  // a missing symbol is an answer, not an error to carry on
      return TensorMapEncodeFn(nullptr);
    }
    return reinterpret_cast<TensorMapEncodeFn>(p);
  }();
  return fn;
}

}  // namespace ll::cuda
