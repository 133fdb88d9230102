#pragma once
// The cross-entropy kernel tests' shared pieces (tests/kernels/cuda/test_cross_entropy_gpu.cpp
// on a GPU, tests/kernels/cuda/emu/test_cross_entropy_emu.cpp in the SIMT emulator): the double
// reference and the random logits and targets. Host-only.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

namespace ll::test::cross_entropy_cases {

// Double reference: loss[r] = logsumexp(row) - row[t] and grad[r, j] = scale * (p_j - [j == t])
// for labelled rows (0 <= t < V); 0 and all-zero rows otherwise.
struct Reference {
  std::vector<double> losses;  // [R]
  std::vector<double> grad;    // [R, V]
};

inline Reference reference(const std::vector<float>& logits, const std::vector<int32_t>& targets,
                           int64_t rows, int64_t vocab, float loss_scale) {
  Reference ref{std::vector<double>(size_t(rows), 0.0),
                std::vector<double>(size_t(rows * vocab), 0.0)};
  for (int64_t r = 0; r < rows; ++r) {
    const int32_t t = targets[size_t(r)];
    if (t < 0 || t >= vocab) continue;
    const float* x = logits.data() + r * vocab;  // [V]
    double mx = -std::numeric_limits<double>::infinity();
    for (int64_t j = 0; j < vocab; ++j) mx = std::max(mx, double(x[j]));
    double sum = 0.0;
    for (int64_t j = 0; j < vocab; ++j) sum += std::exp(double(x[j]) - mx);
    ref.losses[size_t(r)] = mx + std::log(sum) - double(x[t]);
    for (int64_t j = 0; j < vocab; ++j) {
      const double p = std::exp(double(x[j]) - mx) / sum;
      ref.grad[size_t(r * vocab + j)] = double(loss_scale) * (p - (j == t ? 1.0 : 0.0));
    }
  }
  return ref;
}

// Logits ~ N(0, 3), the last row (when there are several) shifted by +1000.
inline std::vector<float> random_logits(std::mt19937_64& rng, int64_t rows, int64_t vocab) {
  std::normal_distribution<float> dist(0.0f, 3.0f);
  std::vector<float> v(size_t(rows * vocab));  // [R, V]
  for (float& x : v) x = dist(rng);
  if (rows > 1)
    for (int64_t j = 0; j < vocab; ++j) v[size_t((rows - 1) * vocab + j)] += 1000.0f;
  return v;
}

// Targets uniform in [0, V), about one row in five unlabelled (-1 or -100); row 0 labelled,
// row 2 unlabelled when there are three rows or more.
inline std::vector<int32_t> random_targets(std::mt19937_64& rng, int64_t rows, int64_t vocab) {
  std::uniform_int_distribution<int32_t> tok(0, int32_t(vocab - 1));
  std::uniform_int_distribution<int> pick(0, 9);
  std::vector<int32_t> t(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    const int p = pick(rng);
    t[size_t(r)] = p == 0 ? -1 : p == 1 ? -100 : tok(rng);
  }
  t[0] = tok(rng);
  if (rows >= 3) t[2] = -1;
  return t;
}

}  // namespace ll::test::cross_entropy_cases
