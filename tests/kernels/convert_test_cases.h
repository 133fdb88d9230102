#pragma once
// The conversion and fill kernel tests' table, shared by test_convert_gpu.cpp (on a GPU) and
// test_convert_emu.cpp (the SIMT emulator): the sizes, the inputs (fp32 values with special
// ones up front, bf16 bit patterns without NaN), the fill values, and the bitwise checks against
// the host's round-to-nearest-even. Include under LL_HAVE_CUDA or LL_HAVE_SIMT_EMULATOR (after
// the emulator's prelude).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <limits>
#include <random>
#include <vector>

#include "tests/kernels/cuda/gpu_test_util.h"
#include "tests/kernels/kernel_test_util.h"

namespace ll::test::convert_cases {

struct Size {
  int64_t n;
  bool emu_slow;  // skipped by the emulator test (slow there)
};
// One element, a partial block, several blocks with a ragged last one.
inline const Size kSizes[] = {
    {1, false}, {9, false}, {1000, false}, {4099, false}, {65537, true},
};

inline constexpr float kFillF32 = 0.625f;
inline constexpr float kFillBf16 = 1.01171875f;  // a tie: rounds to even

// x [n]: fp32 values to convert to bf16; b [n]: bf16 bit patterns (any but NaN) to widen.
struct Data {
  std::vector<float> x;
  std::vector<uint16_t> b;
};
inline Data make_data(std::mt19937_64& rng, int64_t n) {
  const size_t un = size_t(n);
  Data d;
  d.x = random_uniform(rng, un, -1000.0f, 1000.0f);
  // Special values: ties, signed zero, subnormal, infinities, largest finite.
  const float specials[] = {0.0f,
                            -0.0f,
                            1e-40f,
                            -3.0e38f,
                            3.4e38f,
                            std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(),
                            1.00390625f,
                            1.01171875f};
  for (size_t i = 0; i < std::size(specials) && i < un; ++i) d.x[i] = specials[i];
  // bf16 -> f32 of arbitrary non-NaN bit patterns is exact.
  std::uniform_int_distribution<uint32_t> pick(0, 0xffff);
  d.b.resize(un);
  for (auto& v : d.b) {
    do v = uint16_t(pick(rng));
    while ((v & 0x7fff) > 0x7f80);
  }
  return d;
}

// f32 -> bf16 (bits) is the host's round-to-nearest-even.
inline void check_to_bf16(const std::vector<uint16_t>& got, const Data& d) {
  size_t bad = 0;
  for (size_t i = 0; i < d.x.size(); ++i) bad += got[i] != f32_to_bf16_bits(d.x[i]);
  CHECK_MESSAGE(bad == 0, bad << " conversions differ from round-to-nearest-even");
}
// bf16 -> f32 is exact, bit for bit.
inline void check_to_f32(const std::vector<float>& got, const Data& d) {
  size_t bad = 0;
  for (size_t i = 0; i < d.b.size(); ++i) {
    const float want = bf16_bits_to_f32(d.b[i]);
    bad += std::memcmp(&got[i], &want, sizeof(float)) != 0;
  }
  CHECK_MESSAGE(bad == 0, bad << " bf16 -> f32 conversions are not exact");
}
// Fills write every element.
inline void check_fill_f32(const std::vector<float>& got, int64_t n) {
  CHECK(got == std::vector<float>(size_t(n), kFillF32));
}
inline void check_fill_bf16(const std::vector<float>& values, int64_t n) {
  CHECK(values == std::vector<float>(size_t(n), bf16_bits_to_f32(f32_to_bf16_bits(kFillBf16))));
}
inline void check_fill_bf16(const std::vector<uint16_t>& bits, int64_t n) {
  CHECK(bits == std::vector<uint16_t>(size_t(n), f32_to_bf16_bits(kFillBf16)));
}

}  // namespace ll::test::convert_cases
