// Embedding lookup: an exact row copy, and ids outside the vocabulary are an error.
#include <doctest/doctest.h>

#include "common/error.h"
#include "kernels/cpu/embedding.h"
#include "tests/kernels/kernel_test_util.h"

namespace {

using ll::test::check_close;

TEST_CASE("embedding_forward copies the token rows") {
  for (uint64_t seed : ll::test::test_seeds()) {
    INFO("seed " << seed);
    std::mt19937_64 rng(seed);
    struct Shape {
      int64_t n, vocab, dim;
    };
    for (auto [n, vocab, dim] : {Shape{1, 1, 1}, {7, 13, 5}, {33, 100, 64}, {128, 1000, 17}}) {
      CAPTURE(n);
      CAPTURE(vocab);
      CAPTURE(dim);
      const auto table = ll::test::random_uniform(rng, size_t(vocab * dim));  // [V, D]
      std::uniform_int_distribution<int32_t> pick(0, int32_t(vocab - 1));
      std::vector<int32_t> tokens(static_cast<size_t>(n));  // [N], first/last ids included
      for (auto& t : tokens) t = pick(rng);
      tokens[0] = int32_t(vocab - 1);
      tokens[size_t(n - 1)] = 0;
      auto out = ll::test::poisoned(size_t(n * dim));  // [N, D]
      ll::cpu::embedding_forward(out.data(), table.data(), tokens.data(), n, vocab, dim);

      std::vector<double> ref(static_cast<size_t>(n * dim));  // [N, D]
      for (int64_t i = 0; i < n; ++i)
        for (int64_t d = 0; d < dim; ++d)
          ref[size_t(i * dim + d)] = table[size_t(tokens[size_t(i)] * dim + d)];
      check_close(out, ref, 0.0, 0.0, 1e-30);  // a copy is exact
    }
  }
}

TEST_CASE("embedding_forward rejects ids outside the vocabulary") {
  const int64_t vocab = 10, dim = 4;
  std::vector<float> table(size_t(vocab * dim), 1.0f);  // [V, D]
  std::vector<float> out(3 * dim);                      // [3, D]
  for (int32_t bad : {10, 11, -1, -100}) {
    CAPTURE(bad);
    std::vector<int32_t> tokens = {0, 9, bad};
    std::string message;
    try {
      ll::cpu::embedding_forward(out.data(), table.data(), tokens.data(), 3, vocab, dim);
    } catch (const ll::Error& e) {
      message = e.what();
    }
    INFO("message: " << message);
    CHECK(ll::test::contains(message, "position 2"));
    CHECK(ll::test::contains(message, std::to_string(bad)));
    CHECK(ll::test::contains(message, "10"));
  }
}

}  // namespace
