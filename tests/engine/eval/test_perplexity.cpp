// Window enumeration and aggregation of the two perplexity protocols, on hand-checked cases.
#include <doctest/doctest.h>

#include <cmath>

#include "common/error.h"
#include "engine/eval/perplexity.h"

TEST_CASE("paper windows follow eval.py: range(0, n - L, stride) with the last start dropped") {
  // n=1100, L=64: starts 0,256,512,768,1024 -> drop 1024.
  auto w = ll::ppl_windows(1100, 64, 256, ll::PplProtocol::Paper);
  REQUIRE(w.size() == 4);
  CHECK(w[0].start == 0);
  CHECK(w[3].start == 768);
  for (auto& x : w) CHECK(x.length == 64);
  // n - L exactly a multiple of the stride: range excludes the end.
  w = ll::ppl_windows(64 + 512, 64, 256, ll::PplProtocol::Paper);  // starts 0,256 -> drop 256
  CHECK(w.size() == 1);
  CHECK_THROWS_AS(ll::ppl_windows(300, 64, 256, ll::PplProtocol::Paper), ll::Error);
  CHECK_THROWS_AS(ll::ppl_windows(1000, 1, 256, ll::PplProtocol::Paper), ll::Error);
}

TEST_CASE("non-overlapping windows predict every token after the first exactly once") {
  for (int64_t n : {2, 3, 10, 63, 64, 65, 127, 1000}) {
    auto w = ll::ppl_windows(n, 64, 256, ll::PplProtocol::NonOverlapping);
    int64_t predicted = 0, next_target = 1;
    for (auto& x : w) {
      CHECK(x.length >= 2);
      CHECK(x.start + 1 == next_target);  // the window's first target continues the stream
      predicted += x.length - 1;
      next_target = x.start + x.length;
    }
    CHECK(predicted == n - 1);
    CHECK(next_target == n);
  }
  CHECK_THROWS_AS(ll::ppl_windows(1, 64, 256, ll::PplProtocol::NonOverlapping), ll::Error);
}

TEST_CASE("aggregation: paper = mean of window means, non-overlapping = token mean") {
  ll::PplAccumulator paper(ll::PplProtocol::Paper), tokens(ll::PplProtocol::NonOverlapping);
  for (auto* acc : {&paper, &tokens}) {
    acc->add_window({1.0f, 3.0f});  // mean 2
    acc->add_window({4.0f});        // mean 4
  }
  CHECK(paper.result().mean_loss == doctest::Approx(3.0));
  CHECK(paper.result().ppl == doctest::Approx(std::exp(3.0)));
  CHECK(tokens.result().mean_loss == doctest::Approx(8.0 / 3.0));
  CHECK(tokens.result().tokens_scored == 3);
  ll::PplAccumulator bad(ll::PplProtocol::Paper);
  CHECK_THROWS_AS(bad.add_window({1.0f, NAN}), ll::Error);
  CHECK(ll::ppl_protocol_from_name("paper") == ll::PplProtocol::Paper);
  CHECK_THROWS_AS(ll::ppl_protocol_from_name("sliding"), ll::Error);
}
