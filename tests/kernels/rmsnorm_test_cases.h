#pragma once
// The rmsnorm kernel tests' table, shared by test_rmsnorm_gpu.cpp (on a GPU) and
// test_rmsnorm_emu.cpp (the SIMT emulator): the shapes, their bf16-rounded inputs, the CPU
// reference and the tolerances. Include under LL_HAVE_CUDA or LL_HAVE_SIMT_EMULATOR (after the
// emulator's prelude).
#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

#include "kernels/cpu/rmsnorm.h"
#include "tests/kernels/cuda/gpu_test_util.h"
#include "tests/kernels/kernel_test_util.h"

namespace ll::test::rmsnorm_cases {

inline constexpr float kEps = 1e-5f;

struct Shape {
  int64_t n, d;
  size_t offset;  // elements every tensor is shifted off the 16-byte alignment (emulator only)
  bool emu_slow;  // skipped by the emulator test (slow there)
};
// Odd D (the scalar path); multiples of 8 (the 16-byte path, one and two passes of 2048);
// 5 dweight chunks; D past one 256-element pass on the scalar path; aligned D with misaligned
// pointers (scalar); a ragged last dweight chunk (130 rows: 44 + 44 + 42) with two column
// blocks (D = 264: 256 + 8).
inline const Shape kShapes[] = {
    {1, 1, 0, false},     {3, 7, 0, false},     {5, 64, 0, false},   {17, 4096, 0, false},
    {130, 200, 0, false}, {300, 96, 0, false},  {1000, 24, 0, true}, {2, 300, 0, false},
    {4, 64, 1, false},    {130, 264, 0, false},
};

// Forward: x [N, D], weight [D]; the reference out [N, D] and rstd [N].
struct Forward {
  std::vector<float> x, w, out_ref, rstd_ref;
};
inline Forward make_forward(const Shape& s, std::mt19937_64& rng) {
  Forward f;
  f.x = round_bf16(random_uniform(rng, size_t(s.n * s.d), -2.0f, 2.0f));
  f.w = round_bf16(random_uniform(rng, size_t(s.d), 0.5f, 1.5f));
  f.out_ref.resize(f.x.size());
  f.rstd_ref.resize(size_t(s.n));
  ll::cpu::rmsnorm_forward(f.out_ref.data(), f.rstd_ref.data(), f.x.data(), f.w.data(), s.n, s.d,
                           kEps);
  return f;
}

// Backward: x, dout g, the residual gradient dx0 [N, D]; weight [D], dweight dw0 [D]; rstd [N]
// of the forward; the reference dx = dx0 + ..., dw = dw0 + ....
struct Backward {
  std::vector<float> x, w, g, dx0, dw0, rstd, dx_ref, dw_ref;
};
inline Backward make_backward(const Shape& s, std::mt19937_64& rng) {
  const size_t nd = size_t(s.n * s.d);
  Backward b;
  b.x = round_bf16(random_uniform(rng, nd, -2.0f, 2.0f));
  b.w = round_bf16(random_uniform(rng, size_t(s.d), 0.5f, 1.5f));
  b.g = round_bf16(random_uniform(rng, nd, -1.0f, 1.0f));
  b.dx0 = round_bf16(random_uniform(rng, nd, -1.0f, 1.0f));
  b.dw0 = random_uniform(rng, size_t(s.d), -1.0f, 1.0f);
  std::vector<float> y(nd);
  b.rstd.resize(size_t(s.n));
  ll::cpu::rmsnorm_forward(y.data(), b.rstd.data(), b.x.data(), b.w.data(), s.n, s.d, kEps);
  b.dx_ref = b.dx0;
  b.dw_ref = b.dw0;
  ll::cpu::rmsnorm_backward(b.dx_ref.data(), b.dw_ref.data(), b.g.data(), b.x.data(), b.w.data(),
                            b.rstd.data(), s.n, s.d);
  return b;
}

inline void check_out(const std::vector<float>& got, const std::vector<float>& ref) {
  check_close(got, to_double(ref), 1e-5, kBf16Rtol, 1e-2);
}
// rstd: fp32 sum of squares vs the CPU's double one.
inline void check_rstd(const std::vector<float>& got, const std::vector<float>& ref) {
  check_close(got, to_double(ref), 0.0, 1e-5, 1e-5);
}
inline void check_dx(const std::vector<float>& got, const std::vector<float>& ref) {
  check_close(got, to_double(ref), 1e-4, kBf16Rtol, 1e-2);
}
// dweight: fp32 partial sums over at most a few hundred rows vs the CPU's double.
inline void check_dw(const Shape& s, const std::vector<float>& got, const std::vector<float>& ref) {
  check_close(got, to_double(ref), 1e-5 + 1e-6 * double(s.n), 1e-5, 1e-5);
}

}  // namespace ll::test::rmsnorm_cases
