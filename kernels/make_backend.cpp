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

BackendKind resolve_device(const std::string& device) {
  if (device == "auto") return gpu_visible() ? BackendKind::Cuda : BackendKind::Cpu;
  LL_CHECK(device == "cpu" || device == "cuda", "--device must be auto, cpu or cuda, got '{}'",
           device);
  return device == "cuda" ? BackendKind::Cuda : BackendKind::Cpu;
}

std::unique_ptr<Backend> make_backend(const std::string& device, int gpu,
                                      AttentionKernel attention) {
  if (resolve_device(device) == BackendKind::Cpu) {
    (void)backend_traits(BackendKind::Cpu, attention);  // a non-auto choice: a clear error
    return std::make_unique<CpuBackend>();
  }
#if defined(LL_HAVE_CUDA)
  LL_CHECK(gpu_visible(),
           "--device cuda: no CUDA device is visible (driver missing, no GPU, or "
           "CUDA_VISIBLE_DEVICES empty); use --device cpu");
  const int count = cuda::device_count();
  LL_CHECK(gpu >= 0 && gpu < count,
           "--device cuda: GPU {} was asked for (one GPU per rank on a node: the rank's local "
           "rank), but {} GPU{} visible; start at most {} rank{} per node",
           gpu, count, count == 1 ? " is" : "s are", count, count == 1 ? "" : "s");
  return std::make_unique<CudaBackend>(gpu, attention);
#else
  (void)gpu;
  (void)attention;
  fail(
      "--device cuda: this build has no CUDA backend (nvcc was not found when it was "
      "configured); use --device cpu");
#endif
}

std::string describe_backend(const Backend& backend) {
#if defined(LL_HAVE_CUDA)
  if (const auto* cuda = dynamic_cast<const CudaBackend*>(&backend))
    return "cuda: " + cuda->device_description();
#endif
  // The CPU backend has one attention kernel (--attention-kernel auto).
  return fmt::format("{} ({} threads); attention: the fp32 reference", backend.name(),
                     omp_get_max_threads());
}

}  // namespace ll
