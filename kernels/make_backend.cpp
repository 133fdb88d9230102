#include "kernels/make_backend.h"

#include <omp.h>

#include <fmt/format.h>

#include "common/error.h"
#include "kernels/cpu/cpu_backend.h"
#if defined(LL_HAVE_CUDA)
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/device_info.h"
#endif

namespace ll {
namespace {

bool gpu_visible() {
#if defined(LL_HAVE_CUDA)
  return cuda::device_count() > 0;
#else
  return false;
#endif
}

}  // namespace

std::string resolve_device(const std::string& device) {
  if (device == "auto") return gpu_visible() ? "cuda" : "cpu";
  LL_CHECK(device == "cpu" || device == "cuda", "--device must be auto, cpu or cuda, got '{}'",
           device);
  return device;
}

std::unique_ptr<Backend> make_backend(const std::string& device) {
  const std::string resolved = resolve_device(device);
  if (resolved == "cpu") return std::make_unique<CpuBackend>();
#if defined(LL_HAVE_CUDA)
  LL_CHECK(gpu_visible(),
           "--device cuda: no CUDA device is visible (driver missing, no GPU, or "
           "CUDA_VISIBLE_DEVICES empty); use --device cpu");
  return std::make_unique<CudaBackend>(0);
#else
  fail("--device cuda: this build has no CUDA backend (nvcc was not found when it was "
       "configured); use --device cpu");
#endif
}

std::string describe_backend(const Backend& backend) {
#if defined(LL_HAVE_CUDA)
  if (const auto* cuda = dynamic_cast<const CudaBackend*>(&backend))
    return "cuda: " + cuda->device_description();
#endif
  return fmt::format("{} ({} threads)", backend.name(), omp_get_max_threads());
}

}  // namespace ll
