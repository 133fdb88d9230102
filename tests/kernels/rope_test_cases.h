#pragma once
// The rope kernel tests' table, shared by test_rope_gpu.cpp (on a GPU) and test_rope_emu.cpp
// (the SIMT emulator): the cases, their bf16-rounded inputs, the CPU reference and the
// tolerance. Include under LL_HAVE_CUDA or LL_HAVE_SIMT_EMULATOR (after the emulator's prelude).
#include <cstdint>
#include <random>
#include <vector>

#include "kernels/cpu/rope.h"
#include "tests/kernels/cuda/gpu_test_util.h"
#include "tests/kernels/kernel_test_util.h"
#include "tests/kernels/rope_scalings.h"

namespace ll::test::rope_cases {

struct Case {
  int64_t n, heads, hd, offset;
  RopeScaling rope;
  double theta;
  int64_t max_positions = 4096;  // dynamic's threshold
};

// The frequencies the model would apply: dynamic sees seq_len = offset + n.
inline RopeFrequencies freqs_of(const Case& c) {
  return rope_frequencies(c.rope, c.theta, c.hd, c.max_positions, c.offset + c.n);
}

// Long positions and non-power-of-two scales (where one fp32 ulp of the angle would show), head
// dims from 2 to 512 (the largest the kernel takes: more pairs per head than threads), and each
// scaling type: dynamic beyond max_positions, yarn with its attention factor (cos and sin
// scaled), llama3 as Llama-3.1 ships it.
inline const Case kCases[] = {
    {1, 1, 2, 0, {}, 10000.0},
    {3, 2, 6, 5, {}, 10000.0},
    {5, 3, 64, 0, linear_rope_scaling(4.0), 10000.0},
    {17, 4, 128, 100000, linear_rope_scaling(4.0), 10000.0},
    {33, 2, 128, 99000, linear_rope_scaling(2.5), 500000.0},
    {9, 3, 256, 8191, linear_rope_scaling(8.0), 1000000.0},
    {300, 1, 10, 7, {}, 10000.0},
    {4, 2, 512, 31, linear_rope_scaling(25.0), 10000.0},
    {12, 2, 64, 6000, ll::test::dynamic_rope(2.0), 10000.0, 2048},
    {7, 3, 128, 120000, ll::test::yarn_rope(4.0, 32768), 1000000.0},
    {5, 2, 16, 3, ll::test::yarn_rope(8.0, 512), 10000.0},
    {9, 2, 128, 131000, ll::test::llama3_rope(8.0, 8192), 500000.0},
    {6, 4, 64, 40000, ll::test::llama3_rope(32.0, 8192), 500000.0},
};

// x [N, H, hd] (bf16-rounded) and the CPU reference rotated forward and backward.
struct Data {
  std::vector<float> x, fwd, bwd;
};

inline Data make_data(const Case& c, std::mt19937_64& rng) {
  const size_t len = size_t(c.n * c.heads * c.hd);
  Data d;
  d.x = round_bf16(random_uniform(rng, len, -2.0f, 2.0f));
  d.fwd = d.x;
  d.bwd = d.x;
  const RopeFrequencies freqs = freqs_of(c);
  ll::cpu::rope_forward(d.fwd.data(), c.n, c.heads, c.hd, c.offset, freqs);
  ll::cpu::rope_backward(d.bwd.data(), c.n, c.heads, c.hd, c.offset, freqs);
  return d;
}

// fp32 rotation, then one bf16 rounding; atol covers outputs that cancel to ~0 (yarn's attention
// factor scales outputs by up to ~1.2).
inline void check_output(const std::vector<float>& got, const std::vector<float>& ref) {
  check_close(got, to_double(ref), 1e-5, kBf16Rtol, 1e-2);
}

}  // namespace ll::test::rope_cases
