// What the sm_90a probe kernel (kernels/cuda/attention_device_support.cu) reports, pass by pass:
// it writes LL_SM90A_DEVICE_CODE, which must be 1 only in the sm_90a device pass (and the
// emulator), never in a plain sm_90 one. A plain sm_90 build (CMAKE_CUDA_ARCHITECTURES=90,
// native, all) used to pass the Hopper check and launch empty kernels; here the macro is
// evaluated under each pass's predefined macros as nvcc sets them, without a GPU.
#include <doctest/doctest.h>

namespace {

#include "kernels/cuda/sm90a_device_code.h"
constexpr int kHostPass = LL_SM90A_DEVICE_CODE;

#define __CUDA_ARCH__ 800
#include "kernels/cuda/sm90a_device_code.h"
constexpr int kSm80Pass = LL_SM90A_DEVICE_CODE;
#undef __CUDA_ARCH__

#define __CUDA_ARCH__ 900  // -arch=sm_90: no feature macro
#include "kernels/cuda/sm90a_device_code.h"
constexpr int kSm90Pass = LL_SM90A_DEVICE_CODE;

#define __CUDA_ARCH_FEAT_SM90_ALL 1  // -arch=sm_90a
#include "kernels/cuda/sm90a_device_code.h"
constexpr int kSm90aPass = LL_SM90A_DEVICE_CODE;
#undef __CUDA_ARCH_FEAT_SM90_ALL
#undef __CUDA_ARCH__

#define LL_SIMT_EMULATOR_DEVICE_CODE 1  // the emulator implements the Hopper instructions
#include "kernels/cuda/sm90a_device_code.h"
constexpr int kEmulated = LL_SM90A_DEVICE_CODE;
#undef LL_SIMT_EMULATOR_DEVICE_CODE

}  // namespace

TEST_CASE("only the sm_90a pass (and the emulator) holds the Hopper kernels' bodies") {
  CHECK(kHostPass == 0);
  CHECK(kSm80Pass == 0);
  CHECK(kSm90Pass == 0);  // the probe then reports no sm_90a code: tc-sm90 is not available
  CHECK(kSm90aPass == 1);
  CHECK(kEmulated == 1);
}
