#pragma once
// The CUDA backend's training attention kernels, chosen by environment variables; read by the
// backend (kernels/cuda/cuda_backend.cpp) and by the memory plans that count their workspace:
//   LL_CUDA_ATTENTION=simt|tc  the CUDA-core kernels (the default) or the tensor-core ones
//                              (head dims 64 and 128; others stay on the CUDA-core kernels)
//   LL_CUDA_ATTENTION_DQ=deterministic|atomic  how the tensor-core backward sums dQ: in a fixed
//                              order (the default; bitwise reproducible) or, on Hopper, with
//                              fp32 atomics in one dK/dV/dQ kernel (faster; an [N, H, hd] fp32
//                              accumulator, allocated with tensor cores whatever the device)
// Unset or empty means the default; any other value is an ll::Error naming the variable.
#include <cstdint>

namespace ll {

struct CudaAttentionChoice {
  bool tensor_cores = false;
  bool atomic_dq = false;

  bool tensor_cores_for(int64_t head_dim) const {
    return tensor_cores && (head_dim == 64 || head_dim == 128);
  }
  // Whether the backward at this head dim takes the atomic-dQ workspace.
  bool atomic_dq_for(int64_t head_dim) const { return atomic_dq && tensor_cores_for(head_dim); }
};

CudaAttentionChoice cuda_attention_choice_from_env();

}  // namespace ll
