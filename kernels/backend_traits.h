#pragma once
// What a backend is and the facts about it that the memory plan counts, computable without
// constructing one (train_longlora --dry-run plans CUDA runs on machines without a GPU).
// Backend::traits() returns the same value for the backend it was made as.
#include <cstdint>
#include <string_view>

#include "common/dtype.h"
#include "kernels/attention_kernel.h"

namespace ll {

enum class BackendKind { Cpu, Cuda };

std::string_view backend_kind_name(BackendKind kind);  // "cpu", "cuda"

struct BackendTraits {
  BackendKind kind = BackendKind::Cpu;
  DType activation_dtype = DType::F32;  // activations and frozen weights (F32 CPU, BF16 CUDA)
  int64_t fixed_workspace_bytes = 0;    // allocated with the backend: cuBLASLt's on CUDA
  // The training attention family (CUDA: resolved, never Auto; CPU: Auto, its one kernel).
  AttentionKernel attention_kernel = AttentionKernel::Auto;

  // Whether the attention backward takes an fp32 dQ accumulator of [N, H * head_dim] beside D
  // ([H, N]): the atomic-dQ family's.
  bool attention_dq_accumulator() const {
    return attention_kernel == AttentionKernel::TcSm90AtomicDq;
  }
};

// The traits of a `kind` backend running `attention` (auto resolves as the backend would; the
// device's own checks come when the backend is made). The CPU backend has one attention kernel:
// a non-auto choice with it is an ll::Error.
BackendTraits backend_traits(BackendKind kind, AttentionKernel attention = AttentionKernel::Auto);

}  // namespace ll
