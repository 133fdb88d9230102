// Backend traits (kernels/backend_traits.h): computable without a backend, equal to what the
// CPU backend reports, and the CUDA facts the memory plan counts (bf16, the cuBLASLt workspace,
// the atomic-dQ accumulator of one attention family only).
#include <doctest/doctest.h>

#include "common/error.h"
#include "kernels/backend_traits.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/gemm_workspace.h"
#include "kernels/make_backend.h"

TEST_CASE("CPU traits: fp32, no fixed workspace, its one attention kernel") {
  const ll::BackendTraits t = ll::backend_traits(ll::BackendKind::Cpu);
  CHECK(t.kind == ll::BackendKind::Cpu);
  CHECK(t.activation_dtype == ll::DType::F32);
  CHECK(t.fixed_workspace_bytes == 0);
  CHECK(t.attention_kernel == ll::AttentionKernel::Auto);
  CHECK_FALSE(t.attention_dq_accumulator());
  ll::CpuBackend cpu;
  CHECK(cpu.kind() == ll::BackendKind::Cpu);
  CHECK(cpu.name() == "cpu");
  CHECK(cpu.activation_dtype() == ll::DType::F32);
  CHECK(cpu.traits().fixed_workspace_bytes == t.fixed_workspace_bytes);
  CHECK_THROWS_WITH_AS(ll::backend_traits(ll::BackendKind::Cpu, ll::AttentionKernel::TcSm80),
                       "--attention-kernel tc-sm80: the CPU backend has one attention kernel; "
                       "use auto (or --device cuda)",
                       ll::Error);
  CHECK_THROWS_WITH_AS(ll::make_backend("cpu", 0, ll::AttentionKernel::Simt),
                       doctest::Contains("the CPU backend has one attention kernel"), ll::Error);
  CHECK(ll::make_backend("cpu", 0, ll::AttentionKernel::Auto)->kind() == ll::BackendKind::Cpu);
}

TEST_CASE("CUDA traits: bf16, the cuBLASLt workspace, the dQ accumulator of atomic dQ only") {
  for (ll::AttentionKernel k :
       {ll::AttentionKernel::Auto, ll::AttentionKernel::Simt, ll::AttentionKernel::TcSm80,
        ll::AttentionKernel::TcSm90, ll::AttentionKernel::TcSm90AtomicDq}) {
    CAPTURE(ll::attention_kernel_name(k));
    const ll::BackendTraits t = ll::backend_traits(ll::BackendKind::Cuda, k);
    CHECK(t.kind == ll::BackendKind::Cuda);
    CHECK(t.activation_dtype == ll::DType::BF16);
    CHECK(t.fixed_workspace_bytes == ll::cuda::kGemmWorkspaceBytes);
    CHECK(t.attention_kernel == (k == ll::AttentionKernel::Auto ? ll::AttentionKernel::Simt : k));
    CHECK(t.attention_dq_accumulator() == (k == ll::AttentionKernel::TcSm90AtomicDq));
  }
  CHECK(ll::backend_kind_name(ll::BackendKind::Cuda) == "cuda");
  CHECK(ll::resolve_device("cuda") == ll::BackendKind::Cuda);
  CHECK(ll::resolve_device("cpu") == ll::BackendKind::Cpu);
  CHECK_THROWS_AS(ll::resolve_device("gpu"), ll::Error);
}
