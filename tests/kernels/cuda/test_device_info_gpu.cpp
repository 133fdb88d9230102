// The CUDA runtime is reachable and reports a usable device.
#include <doctest/doctest.h>

#include "common/error.h"
#include "tests/gpu_skip.h"

#if defined(LL_HAVE_CUDA)
#include "kernels/cuda/device_info.h"
#endif

TEST_CASE("cuda device is usable") {
  ll::test::require_gpu();
#if defined(LL_HAVE_CUDA)
  const ll::cuda::DeviceInfo info = ll::cuda::device_info(0);
  MESSAGE("device 0: " << info.name << " sm_" << info.sm_major << info.sm_minor << ", "
                       << info.total_bytes / (1 << 20) << " MiB");
  CHECK(info.sm_major >= 8);
  CHECK(info.total_bytes > 0);
  CHECK(info.free_bytes <= info.total_bytes);
  CHECK_THROWS_AS(ll::cuda::device_info(1 << 20), ll::Error);
#endif
}
