// The CUDA backend's attention kernel choice from the environment
// (kernels/cuda_attention_choice.h): defaults, each accepted value, and a clear error for any
// other.
#include <doctest/doctest.h>

#include "common/error.h"
#include "kernels/cuda_attention_choice.h"
#include "tests/scoped_env.h"

using ll::test::ScopedEnv;

TEST_CASE("cuda attention choice: defaults, accepted values, errors") {
  using ll::cuda_attention_choice_from_env;
  {
    ScopedEnv a("LL_CUDA_ATTENTION", nullptr), d("LL_CUDA_ATTENTION_DQ", nullptr);
    const ll::CudaAttentionChoice c = cuda_attention_choice_from_env();
    CHECK_FALSE(c.tensor_cores);
    CHECK_FALSE(c.atomic_dq);
  }
  {
    ScopedEnv a("LL_CUDA_ATTENTION", ""), d("LL_CUDA_ATTENTION_DQ", "deterministic");
    const ll::CudaAttentionChoice c = cuda_attention_choice_from_env();
    CHECK_FALSE(c.tensor_cores);
    CHECK_FALSE(c.atomic_dq);
  }
  {
    ScopedEnv a("LL_CUDA_ATTENTION", "tc"), d("LL_CUDA_ATTENTION_DQ", "atomic");
    const ll::CudaAttentionChoice c = cuda_attention_choice_from_env();
    CHECK(c.tensor_cores);
    CHECK(c.atomic_dq);
    // The tensor-core kernels take head dims 64 and 128 only; the workspace follows them.
    CHECK(c.atomic_dq_for(128));
    CHECK(c.atomic_dq_for(64));
    CHECK_FALSE(c.atomic_dq_for(32));
  }
  {
    // Atomic dQ without the tensor-core kernels: the CUDA-core backward, no accumulator.
    ScopedEnv a("LL_CUDA_ATTENTION", "simt"), d("LL_CUDA_ATTENTION_DQ", "atomic");
    const ll::CudaAttentionChoice c = cuda_attention_choice_from_env();
    CHECK_FALSE(c.tensor_cores);
    CHECK(c.atomic_dq);
    CHECK_FALSE(c.atomic_dq_for(128));
  }
  {
    ScopedEnv a("LL_CUDA_ATTENTION", "flash"), d("LL_CUDA_ATTENTION_DQ", nullptr);
    CHECK_THROWS_WITH_AS(cuda_attention_choice_from_env(),
                         "LL_CUDA_ATTENTION=flash: expected simt or tc", ll::Error);
  }
  {
    ScopedEnv a("LL_CUDA_ATTENTION", "tc"), d("LL_CUDA_ATTENTION_DQ", "fast");
    CHECK_THROWS_WITH_AS(cuda_attention_choice_from_env(),
                         "LL_CUDA_ATTENTION_DQ=fast: expected deterministic or atomic", ll::Error);
  }
}
