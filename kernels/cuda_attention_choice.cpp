#include "kernels/cuda_attention_choice.h"

#include <cstdlib>
#include <string>

#include "common/error.h"

namespace ll {
namespace {

// The value of `name` among {off, on} (off when unset or empty).
bool flag_from_env(const char* name, const char* off, const char* on) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0' || std::string(v) == off) return false;
  LL_CHECK(std::string(v) == on, "{}={}: expected {} or {}", name, v, off, on);
  return true;
}

}  // namespace

CudaAttentionChoice cuda_attention_choice_from_env() {
  CudaAttentionChoice c;
  c.tensor_cores = flag_from_env("LL_CUDA_ATTENTION", "simt", "tc");
  c.atomic_dq = flag_from_env("LL_CUDA_ATTENTION_DQ", "deterministic", "atomic");
  return c;
}

}  // namespace ll
