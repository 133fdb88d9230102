#pragma once
// Launches a kernel by function pointer on a stream, every call checked. Kernels whose host
// launch sequence is a template over the launcher (tc::run_forward_tc, tc::run_backward_tc)
// get this one on the GPU and the SIMT emulator's (tests/cuda_emu) on the host, so both run
// the same sequence. In the emulated CUDA build (kernels compiled by the host compiler,
// LL_SIMT_EMULATOR_DEVICE_CODE) this launcher itself runs the kernel in the emulator.
#include <cuda_runtime.h>

#include <cstddef>
#include <tuple>
#include <utility>

#include "kernels/cuda/cuda_check.h"

#if defined(LL_SIMT_EMULATOR_DEVICE_CODE)
#include "tests/cuda_emu/simt_emulator.h"
#if defined(LL_CUDA_BACKEND_EMULATED)
// The emulated build's stand-in runtime (tests/cuda_emu/fake/fake_cuda_runtime.h) queues async
// copies lazily; this runs what `stream` has queued.
extern "C" cudaError_t ll_emu_run_stream(cudaStream_t stream);
#endif
#endif

namespace ll::cuda {

namespace launch_detail {
// Opts `kernel` in to `smem` bytes of dynamic shared memory on the current device, calling
// cudaFuncSetAttribute only when a launch needs more than it was last given (once per kernel).
void allow_dynamic_smem(const void* kernel, size_t smem);
}  // namespace launch_detail

struct StreamLauncher {
  cudaStream_t stream;

  // Arguments are converted to the kernel's parameter types first (as <<<>>> would).
  // Kernels with dynamic shared memory are opted in to `smem` bytes first (more than 48 KiB,
  // with the kernel's static shared memory, needs it), once per kernel and device.
  template <typename... P, typename... A>
  void operator()(const char* name, void (*kernel)(P...), dim3 grid, dim3 block, size_t smem,
                  A&&... args) const {
    static_assert(sizeof...(P) == sizeof...(A), "argument count does not match the kernel");
#if defined(LL_SIMT_EMULATOR_DEVICE_CODE)
    // The emulated CUDA build (LL_CUDA_BACKEND_EMULATED): the kernel runs now, in the SIMT
    // emulator, after what the fake runtime's lazy stream has queued before it.
#if defined(LL_CUDA_BACKEND_EMULATED)
    LL_CUDA_CHECK(ll_emu_run_stream(stream));
#endif
    (void)emu::launch(name, kernel, grid, block, smem, std::forward<A>(args)...);
#else
    (void)name;
    if (smem > 0) launch_detail::allow_dynamic_smem(reinterpret_cast<const void*>(kernel), smem);
    std::tuple<P...> values(static_cast<P>(args)...);
    std::apply(
        [&](auto&... v) {
          void* argv[] = {static_cast<void*>(&v)...};
          LL_CUDA_CHECK(cudaLaunchKernel(reinterpret_cast<const void*>(kernel), grid, block, argv,
                                         smem, stream));
        },
        values);
#endif
  }
};

}  // namespace ll::cuda
