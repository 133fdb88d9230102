// embedding_backward: scatter-add of dout rows into the table gradient, against central
// finite differences and an in-order double sum; repeated ids accumulate; the result does not
// depend on the thread count; bad ids throw before anything is written.
#include <doctest/doctest.h>
#include <omp.h>

#include <cstring>
#include <string>

#include "common/error.h"
#include "kernels/cpu/embedding.h"
#include "tests/kernels/kernel_test_util.h"

namespace {

struct Problem {
  int64_t n, v, d;
  std::vector<int32_t> tokens;  // [N]
  std::vector<float> table;     // [V, D]
  std::vector<float> dout;      // [N, D]
};

Problem make_problem(std::mt19937_64& rng, int64_t n, int64_t v, int64_t d) {
  Problem p{n,
            v,
            d,
            std::vector<int32_t>(size_t(n)),
            ll::test::random_uniform(rng, size_t(v * d)),
            ll::test::random_uniform(rng, size_t(n * d))};
  std::uniform_int_distribution<int32_t> pick(0, int32_t(v - 1));
  for (auto& t : p.tokens) t = pick(rng);
  // Repeats for certain: token 0 three times, the last id twice.
  if (n >= 5) {
    p.tokens[0] = p.tokens[2] = p.tokens[size_t(n - 1)] = 0;
    p.tokens[1] = p.tokens[3] = int32_t(v - 1);
  }
  return p;
}

// L = sum(dout * table[tokens]), in double.
double loss(const Problem& p, const std::vector<double>& table) {
  double total = 0.0;
  for (int64_t i = 0; i < p.n; ++i)
    for (int64_t k = 0; k < p.d; ++k)
      total += double(p.dout[size_t(i * p.d + k)]) *
               table[size_t(int64_t(p.tokens[size_t(i)]) * p.d + k)];
  return total;
}

TEST_CASE("embedding_backward adds dout rows into their tokens' rows of dtable") {
  struct Shape {
    int64_t n, v, d;
  };
  for (uint64_t seed : ll::test::test_seeds()) {
    INFO("seed " << seed);
    std::mt19937_64 rng(seed);
    // d = 130 spans three column blocks of the kernel, the last one partial.
    for (Shape s : {Shape{1, 1, 1}, Shape{5, 3, 4}, Shape{40, 11, 130}, Shape{17, 50, 64}}) {
      CAPTURE(s.n);
      CAPTURE(s.v);
      CAPTURE(s.d);
      const Problem p = make_problem(rng, s.n, s.v, s.d);
      // Central differences of L over the table (L is linear: exact up to rounding).
      std::vector<double> table(p.table.begin(), p.table.end());
      std::vector<double> fd(table.size());
      const double h = 1e-3;
      for (size_t i = 0; i < table.size(); ++i) {
        const double keep = table[i];
        table[i] = keep + h;
        const double up = loss(p, table);
        table[i] = keep - h;
        const double down = loss(p, table);
        table[i] = keep;
        fd[i] = (up - down) / (2.0 * h);
      }
      for (bool from_zero : {true, false}) {
        CAPTURE(from_zero);
        const auto old = from_zero ? std::vector<float>(size_t(s.v * s.d), 0.0f)
                                   : ll::test::random_uniform(rng, size_t(s.v * s.d));
        auto dtable = old;  // [V, D]
        ll::cpu::embedding_backward(dtable.data(), p.dout.data(), p.tokens.data(), s.n, s.v, s.d);
        std::vector<double> ref(old.size());
        for (size_t i = 0; i < ref.size(); ++i) ref[i] = double(old[i]) + fd[i];
        // Each element is a short fp32 sum (one term per occurrence of its token).
        ll::test::check_close(dtable, ref, 1e-6, 1e-6, 1e-6);

        // The same bits with one thread and with several.
        const int threads = omp_get_max_threads();
        auto serial = old;
        omp_set_num_threads(1);
        ll::cpu::embedding_backward(serial.data(), p.dout.data(), p.tokens.data(), s.n, s.v, s.d);
        omp_set_num_threads(3);
        auto parallel = old;
        ll::cpu::embedding_backward(parallel.data(), p.dout.data(), p.tokens.data(), s.n, s.v, s.d);
        omp_set_num_threads(threads);
        CHECK(std::memcmp(serial.data(), dtable.data(), dtable.size() * sizeof(float)) == 0);
        CHECK(std::memcmp(parallel.data(), dtable.data(), dtable.size() * sizeof(float)) == 0);
      }
    }
  }
}

TEST_CASE("embedding_backward: a repeated token gets the sum of its rows, in position order") {
  // Three positions of token 1: dtable[1] = old + a + b + c, added in that order.
  const std::vector<int32_t> tokens = {1, 0, 1, 1};
  const std::vector<float> dout = {1.0f, 2.0f, 10.0f, 20.0f, 0.25f, 0.5f, 1e8f, -3.0f};  // [4, 2]
  std::vector<float> dtable = {5.0f, 5.0f, 100.0f, 200.0f};                              // [2, 2]
  ll::cpu::embedding_backward(dtable.data(), dout.data(), tokens.data(), 4, 2, 2);
  CHECK(dtable[0] == 15.0f);
  CHECK(dtable[1] == 25.0f);
  CHECK(dtable[2] == ((100.0f + 1.0f) + 0.25f) + 1e8f);
  CHECK(dtable[3] == 200.0f + 2.0f + 0.5f - 3.0f);
}

TEST_CASE("embedding_backward rejects a token outside the vocabulary before writing") {
  for (int32_t bad : {-1, 7, 1000000}) {
    CAPTURE(bad);
    const std::vector<int32_t> tokens = {0, 3, bad, 1};
    const std::vector<float> dout(4 * 2, 1.0f);  // [4, 2]
    std::vector<float> dtable(7 * 2, 0.5f);      // [7, 2]
    std::string message;
    try {
      ll::cpu::embedding_backward(dtable.data(), dout.data(), tokens.data(), 4, 7, 2);
    } catch (const ll::Error& e) {
      message = e.what();
    }
    INFO("message: " << message);
    CHECK(ll::test::contains(message, "position 2"));
    CHECK(ll::test::contains(message, std::to_string(bad)));
    for (float v : dtable) CHECK(v == 0.5f);
  }
}

}  // namespace
