#pragma once
// The AdamW kernel tests' table, shared by test_adamw_gpu.cpp (on a GPU) and
// test_adamw_emu.cpp (the SIMT emulator): the sizes, weight decays and gradient scales, the
// inputs, the step of each iteration, and the checks against ll::adamw_update (the CPU
// reference) with their tolerances. Include under LL_HAVE_CUDA or LL_HAVE_SIMT_EMULATOR (after
// the emulator's prelude).
#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

#include "optim/adamw.h"
#include "tests/kernels/cuda/gpu_test_util.h"
#include "tests/kernels/kernel_test_util.h"

namespace ll::test::adamw_cases {

struct Size {
  int64_t n;
  bool emu_slow;  // skipped by the emulator test (slow there)
};
// One element, a partial block, several blocks with a ragged last one.
inline const Size kSizes[] = {
    {1, false}, {7, false}, {1000, false}, {4099, false}, {100003, true},
};
inline const double kWeightDecays[] = {0.0, 0.1};
inline const float kGradScales[] = {1.0f, 0.37f};

// The initial master weights [n] (m and v start at zero) and each step's gradient [n].
inline std::vector<float> initial_master(std::mt19937_64& rng, size_t n) {
  return random_uniform(rng, n);
}
inline std::vector<float> random_grad(std::mt19937_64& rng, size_t n) {
  return random_uniform(rng, n, -2.0f, 2.0f);
}

// Step t (from 1) of a case.
inline ll::AdamWStep make_step(int64_t t, double weight_decay, float grad_scale) {
  ll::AdamWStep step;
  step.config.weight_decay = weight_decay;
  step.lr = 1e-3 * double(t);
  step.step = t;
  step.grad_scale = grad_scale;
  return step;
}

// Same fp32 operations in the same order: equal up to the host's own rounding choices (e.g. a
// contracted fma), i.e. an ulp or two.
inline void check_master(const std::vector<float>& got, const std::vector<float>& ref) {
  check_close(got, to_double(ref), 1e-7, 1e-6, 1e-6);
}
inline void check_m(const std::vector<float>& got, const std::vector<float>& ref) {
  check_close(got, to_double(ref), 1e-9, 1e-6, 1e-6);
}
inline void check_v(const std::vector<float>& got, const std::vector<float>& ref) {
  check_close(got, to_double(ref), 1e-12, 1e-6, 1e-6);
}
// The bf16 parameter copy (its values) is bf16(master) bit for bit.
inline void check_param(const std::vector<float>& param, const std::vector<float>& master) {
  size_t mismatched = 0;
  for (size_t i = 0; i < param.size(); ++i)
    if (f32_to_bf16_bits(param[i]) != f32_to_bf16_bits(master[i])) ++mismatched;
  CHECK_MESSAGE(mismatched == 0, mismatched << " bf16 params != bf16(master)");
}

}  // namespace ll::test::adamw_cases
