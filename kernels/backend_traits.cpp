#include "kernels/backend_traits.h"

#include "common/error.h"
#include "kernels/cuda/gemm_workspace.h"

namespace ll {

std::string_view backend_kind_name(BackendKind kind) {
  return kind == BackendKind::Cuda ? "cuda" : "cpu";
}

BackendTraits backend_traits(BackendKind kind, AttentionKernel attention) {
  BackendTraits t;
  t.kind = kind;
  if (kind == BackendKind::Cpu) {
    LL_CHECK(attention == AttentionKernel::Auto,
             "--attention-kernel {}: the CPU backend has one attention kernel; use auto (or "
             "--device cuda)",
             attention_kernel_name(attention));
    return t;
  }
  t.activation_dtype = DType::BF16;
  t.fixed_workspace_bytes = cuda::kGemmWorkspaceBytes;
  t.attention_kernel = attention == AttentionKernel::Auto ? attention_kernel_auto() : attention;
  return t;
}

}  // namespace ll
