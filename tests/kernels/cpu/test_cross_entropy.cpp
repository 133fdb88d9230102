// Fused LM head + cross-entropy against a double reference; chunking does not change the
// result; unlabelled positions; bad labels and non-finite logits are errors.
#include <doctest/doctest.h>

#include <string>

#include "common/error.h"
#include "kernels/cpu/cross_entropy.h"
#include "tests/kernels/cpu/classifier_problem.h"
#include "tests/kernels/kernel_test_util.h"

namespace {

using ll::test::make_problem;
using ll::test::Problem;

// loss_n = logsumexp(logits_n) - logits_n[target_n] with logits in double; 0 when unlabelled.
std::vector<double> reference(const Problem& p, int64_t* n_labelled) {
  std::vector<double> loss(static_cast<size_t>(p.n), 0.0);  // [N]
  *n_labelled = 0;
  for (int64_t i = 0; i < p.n; ++i) {
    if (p.target[size_t(i)] < 0) continue;
    ++*n_labelled;
    std::vector<double> logits(static_cast<size_t>(p.v));  // [V]
    for (int64_t j = 0; j < p.v; ++j) {
      double s = 0.0;
      for (int64_t k = 0; k < p.d; ++k)
        s += double(p.x[size_t(i * p.d + k)]) * double(p.lm_head[size_t(j * p.d + k)]);
      logits[size_t(j)] = s;
    }
    double sum = 0.0;  // plain sum of exp: the logits here are small, no overflow
    for (double l : logits) sum += std::exp(l);
    loss[size_t(i)] = std::log(sum) - logits[size_t(p.target[size_t(i)])];
  }
  return loss;
}

std::vector<float> run(const Problem& p, int64_t chunk_rows, int64_t* n_labelled) {
  auto losses = ll::test::poisoned(size_t(p.n));  // [N]
  *n_labelled = ll::cpu::classifier_forward(losses.data(), p.x.data(), p.lm_head.data(),
                                            p.target.data(), p.n, p.d, p.v, chunk_rows);
  return losses;
}

std::string error_of(const Problem& p, int64_t chunk_rows) {
  try {
    int64_t count = 0;
    run(p, chunk_rows, &count);
  } catch (const ll::Error& e) {
    return e.what();
  }
  return "";
}

TEST_CASE("classifier_forward matches logsumexp - logit[target] for any chunk size") {
  struct Shape {
    int64_t n, d, v;
  };
  for (uint64_t seed : ll::test::test_seeds()) {
    INFO("seed " << seed);
    std::mt19937_64 rng(seed);
    for (auto [n, d, v] : {Shape{1, 1, 2}, Shape{1, 16, 37}, Shape{13, 32, 101}, Shape{40, 64, 500},
                           Shape{9, 7, 3}}) {
      CAPTURE(n);
      CAPTURE(d);
      CAPTURE(v);
      const Problem p = make_problem(rng, n, d, v);
      int64_t expected_count = 0;
      const auto ref = reference(p, &expected_count);
      std::vector<float> first;
      for (int64_t chunk : {int64_t(1), int64_t(7), n, n + 5}) {
        CAPTURE(chunk);
        int64_t count = -1;
        const auto losses = run(p, chunk, &count);
        CHECK(count == expected_count);
        ll::test::check_close(losses, ref, 1e-5, 1e-5);
        for (int64_t i = 0; i < n; ++i)
          if (p.target[size_t(i)] < 0) CHECK(losses[size_t(i)] == 0.0f);
        // Chunking only changes how many rows one sgemm call covers; BLAS may pick another
        // kernel for a different row count, so allow a few ulps rather than demand bit equality.
        if (first.empty()) first = losses;
        for (int64_t i = 0; i < n; ++i)
          CHECK(std::fabs(losses[size_t(i)] - first[size_t(i)]) <=
                1e-6f * (1.0f + std::fabs(first[size_t(i)])));
      }
      // A chunk larger than N is the same computation as chunk = N.
      int64_t c1 = 0, c2 = 0;
      CHECK(run(p, n, &c1) == run(p, n + 5, &c2));
    }
  }
}

TEST_CASE("classifier_forward with a one-word vocabulary gives loss 0") {
  std::mt19937_64 rng(5);
  Problem p = make_problem(rng, 3, 4, 1);
  for (auto& t : p.target) t = 0;
  int64_t count = -1;
  const auto losses = run(p, 2, &count);
  CHECK(count == 3);
  for (float l : losses) CHECK(l == 0.0f);
}

TEST_CASE("classifier_forward with every position unlabelled counts zero") {
  std::mt19937_64 rng(7);
  Problem p = make_problem(rng, 6, 8, 11);
  for (auto& t : p.target) t = -100;
  int64_t count = -1;
  const auto losses = run(p, 4, &count);
  CHECK(count == 0);
  for (float l : losses) CHECK(l == 0.0f);
}

TEST_CASE("classifier_forward rejects a target id outside the vocabulary") {
  std::mt19937_64 rng(11);
  Problem p = make_problem(rng, 10, 8, 50);
  p.target[7] = 50;
  const std::string message = error_of(p, 3);
  INFO("message: " << message);
  CHECK(ll::test::contains(message, "position 7"));
  CHECK(ll::test::contains(message, "50"));
}

TEST_CASE("classifier_forward rejects non-finite logits") {
  std::mt19937_64 rng(13);
  for (float bad :
       {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()}) {
    Problem p = make_problem(rng, 10, 8, 50);
    p.target[6] = 3;
    p.x[size_t(6 * p.d + 2)] = bad;  // poisons every logit of position 6
    const std::string message = error_of(p, 4);
    INFO("message: " << message);
    CHECK(ll::test::contains(message, "position 6"));
  }
}

TEST_CASE("classifier_forward rejects chunk_rows < 1") {
  std::mt19937_64 rng(17);
  const Problem p = make_problem(rng, 4, 8, 10);
  CHECK_FALSE(error_of(p, 0).empty());
}

}  // namespace
