#pragma once
// The attention kernel tests' shared vocabulary (CPU-only code; used by the GPU tests and the
// SIMT-emulator tests of the CUDA kernels): a test case, its mask, the S2 group sizes tried
// for a length, and the gradient comparison of the backward tests.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/attention_pattern.h"
#include "tests/kernels/kernel_test_util.h"

namespace ll::test {

// A std::string: doctest's INFO prints a char* as a pointer.
inline std::string mode_name(AttnMode m) {
  return m == AttnMode::Dense ? "dense" : m == AttnMode::S2 ? "s2" : "s2roll";
}

struct AttnCase {
  AttnMode mode;
  int64_t n, h, hkv, hd, g;  // N, query heads, kv heads, head dim, S2 group size (0: dense)
};

inline AttentionPattern mask_of(const AttnCase& c) {
  return AttentionPattern{c.mode, c.n, c.mode == AttnMode::Dense ? 0 : c.g, c.h};
}

// Group sizes for N: 2, 16, 64, N/4 (even), one that does not divide N, one larger than N.
inline std::vector<int64_t> group_sizes(int64_t n) {
  std::vector<int64_t> gs = {2, 16, 64, s2_group_size(n, 0.25)};
  for (int64_t g = std::max<int64_t>(4, (n / 3) & ~int64_t(1)); g < n; g += 2) {
    if (n % g != 0) {
      gs.push_back(g);
      break;
    }
  }
  gs.push_back((n + 2) & ~int64_t(1));  // even, > N
  std::sort(gs.begin(), gs.end());
  gs.erase(std::unique(gs.begin(), gs.end()), gs.end());
  return gs;
}

// A bf16 kernel's gradient against the fp32 reference. Tolerances scaled to the largest
// reference gradient: P and dS are rounded to bf16 before their products (as in
// FlashAttention-2), the outputs once more. The inputs are O(1), so the scale is floored at
// 1e-2: with N = 1 (one visible key per query) dq and dk are exactly 0 in exact arithmetic
// (dP - D cancels) and both sides hold rounding noise only; the relative-norm test is then
// meaningless and skipped (the per-element bound, 1e-4, still applies).
inline void check_grad(const char* what, const std::vector<float>& got,
                       const std::vector<float>& ref) {
  double mx = 0.0;
  for (float x : ref) mx = std::max(mx, double(std::fabs(x)));
  INFO(std::string(what) << " (max |ref| " << mx << ")");  // doctest prints a char* as a pointer
  const bool degenerate = mx < 1e-2;
  check_close(got, std::vector<double>(ref.begin(), ref.end()), 1e-2 * std::max(mx, 1e-2), 2e-2,
              degenerate ? 1e30 : 1.5e-2);
}

}  // namespace ll::test
