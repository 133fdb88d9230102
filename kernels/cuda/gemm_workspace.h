#pragma once
// The cuBLASLt workspace the CUDA backend reserves once for its GEMMs (kernels/cuda/gemm.h).
// Free of CUDA headers, so that the memory plan can count it on machines without the toolkit.
#include <cstdint>

namespace ll::cuda {

inline constexpr int64_t kGemmWorkspaceBytes = int64_t(32) << 20;

}  // namespace ll::cuda
