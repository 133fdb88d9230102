#pragma once
// A random LM-head + cross-entropy problem shared by the classifier forward and backward
// tests: hidden states, lm_head, and targets that include unlabelled positions.
#include <cstdint>
#include <random>
#include <vector>

#include "tests/kernels/kernel_test_util.h"

namespace ll::test {

struct Problem {
  int64_t n, d, v;
  std::vector<float> x;         // [N, D]
  std::vector<float> lm_head;   // [V, D]
  std::vector<int32_t> target;  // [N]
};

Problem make_problem(std::mt19937_64& rng, int64_t n, int64_t d, int64_t v) {
  Problem p{n,
            d,
            v,
            ll::test::random_uniform(rng, size_t(n * d), -2.0f, 2.0f),
            ll::test::random_uniform(rng, size_t(v * d), -0.5f, 0.5f),
            std::vector<int32_t>(static_cast<size_t>(n))};
  std::uniform_int_distribution<int32_t> pick(0, int32_t(v - 1));
  for (auto& t : p.target) t = pick(rng);
  // The extreme ids, some unlabelled positions (-100 and -1), and with N >= 12 a run of four
  // unlabelled positions [4, 8): a whole chunk without labels for chunk_rows 4 (and 1, 2).
  p.target[0] = int32_t(v - 1);
  if (n > 1) p.target[1] = 0;
  for (int64_t i = 2; i < n; i += 5) p.target[size_t(i)] = i % 2 ? -100 : -1;
  if (n >= 12)
    for (int64_t i = 4; i < 8; ++i) p.target[size_t(i)] = -1;
  return p;
}

}  // namespace ll::test
