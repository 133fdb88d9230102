#pragma once
// The SwiGLU kernel tests' table, shared by test_swiglu_gpu.cpp (on a GPU) and
// test_swiglu_emu.cpp (the SIMT emulator): the sizes, their bf16-rounded inputs (exp(-g)
// overflowing at the first two), the CPU reference and the tolerance. Include under
// LL_HAVE_CUDA or LL_HAVE_SIMT_EMULATOR (after the emulator's prelude).
#include <cstdint>
#include <random>
#include <vector>

#include "kernels/cpu/swiglu.h"
#include "tests/kernels/cuda/gpu_test_util.h"
#include "tests/kernels/kernel_test_util.h"

namespace ll::test::swiglu_cases {

// Ragged sizes and several blocks; each runs at offset 0 (the 16-byte path) and at offset 1
// (pointers not 16-byte aligned: the scalar path).
inline const int64_t kSizes[] = {1, 7, 8, 1000, 4099, 65539};
inline const int64_t kOffsets[] = {0, 1};

// Inputs (bf16-rounded): n elements used from `offset` on; the CPU reference over those n.
struct Data {
  int64_t n, offset;
  std::vector<float> gate, up, dout;           // [offset + n]
  std::vector<float> out_ref, dg_ref, du_ref;  // [n]
};

inline Data make_data(std::mt19937_64& rng, int64_t n, int64_t offset) {
  const size_t len = size_t(n + offset);
  Data d{n,
         offset,
         round_bf16(random_uniform(rng, len, -6.0f, 6.0f)),
         round_bf16(random_uniform(rng, len, -2.0f, 2.0f)),
         round_bf16(random_uniform(rng, len, -1.0f, 1.0f)),
         {},
         {},
         {}};
  d.gate[size_t(offset)] = -100.0f;  // exp(-g) overflows: silu = -0, dgate = 0
  if (n > 1) d.gate[size_t(offset) + 1] = 100.0f;
  const size_t un = size_t(n);
  d.out_ref.resize(un);
  d.dg_ref.resize(un);
  d.du_ref.resize(un);
  ll::cpu::swiglu_forward(d.out_ref.data(), d.gate.data() + offset, d.up.data() + offset, n);
  ll::cpu::swiglu_backward(d.dg_ref.data(), d.du_ref.data(), d.dout.data() + offset,
                           d.gate.data() + offset, d.up.data() + offset, n);
  return d;
}

// One bf16 rounding of an fp32 result.
inline void check_output(const std::vector<float>& got, const std::vector<float>& ref) {
  check_close(got, to_double(ref), 1e-5, kBf16Rtol, 1e-2);
}

}  // namespace ll::test::swiglu_cases
