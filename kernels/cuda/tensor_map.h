#pragma once
// The driver's cuTensorMapEncodeTiled (bulk tensor copy descriptors), reached through the
// runtime's driver entry point so that the engine never links libcuda itself (it runs on
// machines without a GPU driver).
#include <cuda.h>
#include <cudaTypedefs.h>  // PFN_cuTensorMapEncodeTiled_v12000

namespace ll::cuda {

using TensorMapEncodeFn = PFN_cuTensorMapEncodeTiled_v12000;

// The driver's cuTensorMapEncodeTiled, or null when the driver does not provide it (looked up
// once).
TensorMapEncodeFn tensor_map_encoder();

}  // namespace ll::cuda
