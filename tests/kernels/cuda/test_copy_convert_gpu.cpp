// CudaBackend::copy of an F32 tensor into a BF16 one (the sharded optimizer's gathered fp32
// master weights into the bf16 parameters the forward reads): bitwise against the host's
// round-to-nearest-even (common/dtype.h's f32_to_bf16) on random values and on the cases that
// go wrong first (ties in both directions, signed zeros, denormals and their ties, the largest
// denormal rounding up to the smallest normal, overflow to infinity at and past the tie,
// infinities, NaN of either sign); every element written (the output is poisoned first); same
// dtype copies still exact; other dtype pairs and shape mismatches are errors.
#include <doctest/doctest.h>

#include "tests/error_text.h"
#include "tests/gpu_skip.h"

#if defined(LL_HAVE_CUDA)
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "common/error.h"
#include "kernels/cuda/cuda_backend.h"
#include "kernels/cuda/cuda_check.h"
#include "tests/kernels/kernel_test_util.h"

namespace {

using namespace ll;

float from_bits(uint32_t bits) {
  float f = 0.0f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

bool is_bf16_nan(uint16_t bits) { return (bits & 0x7fffu) > 0x7f80u; }

// The values most likely to be rounded wrongly, as fp32 bit patterns.
std::vector<float> special_values() {
  const float inf = std::numeric_limits<float>::infinity();
  return {
      0.0f,
      -0.0f,
      1.0f,
      -1.0f,
      1.00390625f,  // 1 + 2^-8: tie between 1 and 1 + 2^-7, to even (down)
      1.01171875f,  // 1 + 3 * 2^-8: tie, to even (up)
      -1.00390625f,
      -1.01171875f,
      from_bits(0x3f808001u),  // just above a tie: up
      from_bits(0x3f807fffu),  // just below a tie: down
      from_bits(0x00000001u),  // smallest denormal: to +0
      from_bits(0x80000001u),  // to -0
      from_bits(0x00008000u),  // denormal tie, to even (0)
      from_bits(0x00018000u),  // denormal tie, to even (up to 2)
      from_bits(0x007fffffu),  // largest denormal: up to the smallest normal
      from_bits(0x00800000u),  // smallest normal
      1e-40f,
      -1e-40f,
      from_bits(0x7f7f7fffu),  // below the overflow tie: largest finite bf16
      from_bits(0x7f7f8000u),  // the overflow tie: to even, which is infinity
      std::numeric_limits<float>::max(),
      -std::numeric_limits<float>::max(),
      inf,
      -inf,
      std::numeric_limits<float>::quiet_NaN(),
      -std::numeric_limits<float>::quiet_NaN(),
      from_bits(0x7f800001u),  // signalling NaN whose payload would round to infinity
      from_bits(0xff80ffffu),
  };
}

std::vector<uint16_t> download_bits(CudaBackend& gpu, const Tensor& t) {
  std::vector<uint16_t> bits(size_t(t.numel()));  // [n] bf16 bit patterns
  gpu.synchronize();
  LL_CUDA_CHECK(cudaMemcpy(bits.data(), t.data, t.nbytes(), cudaMemcpyDeviceToHost));
  return bits;
}

using ll::test::error_of;

}  // namespace
#endif

TEST_CASE("cuda backend copy converts F32 into BF16 with round to nearest even") {
  ll::test::require_gpu();
#if defined(LL_HAVE_CUDA)
  CudaBackend gpu(0);
  for (const uint64_t seed : ll::test::test_seeds()) {
    std::mt19937_64 rng(seed);
    // 1: a single element; 28: the special values only; 1 << 20 | 3: several grid strides.
    for (const int64_t n : {int64_t(1), int64_t(28), int64_t((1 << 20) | 3)}) {
      INFO("seed " << seed << " n " << n);
      std::vector<float> values = ll::test::random_uniform(rng, size_t(n), -3e4f, 3e4f);  // [n]
      const std::vector<float> specials = special_values();
      for (size_t i = 0; i < specials.size() && i < values.size(); ++i) values[i] = specials[i];
      // Random bit patterns too: every exponent, denormals and NaNs included.
      std::uniform_int_distribution<uint32_t> any_bits;
      for (size_t i = specials.size(); i < values.size(); i += 7)
        values[i] = from_bits(any_bits(rng));

      OwnedTensor src = gpu.allocate({n}, DType::F32);   // [n]
      OwnedTensor dst = gpu.allocate({n}, DType::BF16);  // [n]
      gpu.upload_f32(*src, values.data());
      LL_CUDA_CHECK(cudaMemsetAsync(dst->data, 0xFF, dst->nbytes(), gpu.stream()));  // NaN
      gpu.copy(*dst, *src);
      const std::vector<uint16_t> bits = download_bits(gpu, *dst);
      int64_t wrong = 0;
      for (size_t i = 0; i < values.size(); ++i) {
        const uint16_t want = f32_to_bf16(values[i]);
        // NaN payloads may differ (the GPU gives its canonical NaN); a NaN must stay a NaN.
        const bool ok = is_bf16_nan(want) ? is_bf16_nan(bits[i]) : bits[i] == want;
        if (!ok && wrong++ < 5) {
          uint32_t in = 0;
          std::memcpy(&in, &values[i], sizeof(in));
          MESSAGE("element " << i << ": f32 bits 0x" << std::hex << in << " gave bf16 0x" << bits[i]
                             << ", expected 0x" << want << std::dec);
        }
      }
      CHECK_MESSAGE(wrong == 0, wrong << " of " << n << " conversions differ from the host's");
    }
  }
#endif
}

TEST_CASE("cuda backend copy: same dtype stays exact, other pairs and shapes are errors") {
  ll::test::require_gpu();
#if defined(LL_HAVE_CUDA)
  using ll::test::contains;
  CudaBackend gpu(0);
  std::mt19937_64 rng(7);
  const std::vector<float> values = ll::test::random_uniform(rng, 1001);  // [1001]
  OwnedTensor a = gpu.allocate({7, 143}, DType::F32);                     // [7, 143]
  OwnedTensor b = gpu.allocate({7, 143}, DType::F32);
  gpu.upload_f32(*a, values.data());
  LL_CUDA_CHECK(cudaMemsetAsync(b->data, 0xFF, b->nbytes(), gpu.stream()));
  gpu.copy(*b, *a);
  std::vector<float> back(values.size());
  gpu.download_f32(back.data(), *b);
  CHECK(std::memcmp(back.data(), values.data(), values.size() * sizeof(float)) == 0);

  OwnedTensor h = gpu.allocate({7, 143}, DType::BF16);
  OwnedTensor i32 = gpu.allocate({7, 143}, DType::I32);
  OwnedTensor wrong_shape = gpu.allocate({143, 7}, DType::BF16);
  CHECK(contains(error_of([&] { gpu.copy(*a, *h); }),
                 "copy: BF16 into F32 is not supported (same dtype, or F32 into BF16)"));
  CHECK(contains(error_of([&] { gpu.copy(*i32, *a); }), "copy: F32 into I32 is not supported"));
  CHECK(contains(error_of([&] { gpu.copy(*wrong_shape, *a); }),
                 "copy: operands of shapes [143, 7] and [7, 143]"));
  // An empty tensor converts nothing and is no error.
  OwnedTensor e32 = gpu.allocate({0}, DType::F32);
  OwnedTensor e16 = gpu.allocate({0}, DType::BF16);
  gpu.copy(*e16, *e32);
  gpu.synchronize();
#endif
}
