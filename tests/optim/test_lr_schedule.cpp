// Learning-rate schedules: linear warmup from 0, then constant or cosine to min_lr_ratio * lr,
// as transformers' get_constant_schedule_with_warmup / get_cosine_schedule_with_warmup give them.
#include <doctest/doctest.h>

#include <cmath>
#include <numbers>
#include <string>

#include "common/error.h"
#include "optim/lr_schedule.h"

namespace {

ll::LrScheduleConfig config(ll::LrSchedule s, double lr, int64_t warmup, int64_t total,
                            double min_ratio = 0.0) {
  ll::LrScheduleConfig c;
  c.schedule = s;
  c.lr = lr;
  c.warmup_steps = warmup;
  c.total_steps = total;
  c.min_lr_ratio = min_ratio;
  return c;
}

}  // namespace

TEST_CASE("names") {
  CHECK(ll::lr_schedule_from_name("constant") == ll::LrSchedule::Constant);
  CHECK(ll::lr_schedule_from_name("cosine") == ll::LrSchedule::Cosine);
  CHECK(ll::lr_schedule_name(ll::LrSchedule::Constant) == "constant");
  CHECK(ll::lr_schedule_name(ll::LrSchedule::Cosine) == "cosine");
  CHECK_THROWS_AS(ll::lr_schedule_from_name("linear"), ll::Error);
  CHECK_THROWS_AS(ll::lr_schedule_from_name("Cosine"), ll::Error);
  try {
    ll::lr_schedule_from_name("warmup");
    FAIL("no error");
  } catch (const ll::Error& e) {
    const std::string msg = e.what();
    CHECK(msg.find("\"warmup\"") != std::string::npos);
    CHECK(msg.find("constant") != std::string::npos);
    CHECK(msg.find("cosine") != std::string::npos);
  }
}

TEST_CASE("linear warmup from 0, then constant") {
  const auto c = config(ll::LrSchedule::Constant, 2e-5, 20, 1000);
  CHECK(ll::learning_rate(c, 0) == 0.0);
  CHECK(ll::learning_rate(c, 1) == doctest::Approx(2e-5 / 20));
  CHECK(ll::learning_rate(c, 10) == doctest::Approx(1e-5));
  CHECK(ll::learning_rate(c, 19) == doctest::Approx(2e-5 * 19 / 20));
  CHECK(ll::learning_rate(c, 20) == 2e-5);
  CHECK(ll::learning_rate(c, 500) == 2e-5);
  CHECK(ll::learning_rate(c, 1000) == 2e-5);
  CHECK(ll::learning_rate(c, 5000) == 2e-5);  // past total_steps: still constant
  for (int64_t s = 1; s < 20; ++s) CHECK(ll::learning_rate(c, s) > ll::learning_rate(c, s - 1));
}

TEST_CASE("no warmup: full lr from step 0") {
  CHECK(ll::learning_rate(config(ll::LrSchedule::Constant, 1e-3, 0, 10), 0) == 1e-3);
  CHECK(ll::learning_rate(config(ll::LrSchedule::Cosine, 1e-3, 0, 10), 0) == 1e-3);
}

TEST_CASE("cosine: endpoints, midpoint and the floor") {
  const auto c = config(ll::LrSchedule::Cosine, 1e-3, 10, 110);
  CHECK(ll::learning_rate(c, 5) == doctest::Approx(5e-4));   // warmup as before
  CHECK(ll::learning_rate(c, 10) == doctest::Approx(1e-3));  // start of decay: lr
  CHECK(ll::learning_rate(c, 60) == doctest::Approx(5e-4));  // midpoint: lr / 2
  CHECK(ll::learning_rate(c, 35) ==
        doctest::Approx(1e-3 * 0.5 * (1 + std::cos(std::numbers::pi / 4))));
  CHECK(ll::learning_rate(c, 110) == doctest::Approx(0.0));  // end: 0
  CHECK(ll::learning_rate(c, 500) == doctest::Approx(0.0));  // clamped after the end
  for (int64_t s = 11; s <= 110; ++s) CHECK(ll::learning_rate(c, s) < ll::learning_rate(c, s - 1));

  const auto f = config(ll::LrSchedule::Cosine, 1e-3, 10, 110, 0.1);
  CHECK(ll::learning_rate(f, 10) == doctest::Approx(1e-3));
  CHECK(ll::learning_rate(f, 60) == doctest::Approx(1e-3 * (0.1 + 0.9 * 0.5)));
  CHECK(ll::learning_rate(f, 110) == doctest::Approx(1e-4));
  CHECK(ll::learning_rate(f, 1000) == doctest::Approx(1e-4));
  CHECK(ll::learning_rate(f, 0) == 0.0);  // warmup still starts at 0
}

TEST_CASE("cosine matches transformers' formula step by step") {
  // get_cosine_schedule_with_warmup(num_cycles=0.5) with min_lr_rate r:
  //   progress = (step - warmup) / max(1, total - warmup)
  //   factor = max(0, 0.5 * (1 + cos(pi * 2 * 0.5 * progress))); factor = factor * (1 - r) + r
  const int64_t warmup = 7, total = 53;
  const double lr = 3e-4, r = 0.05;
  const auto c = config(ll::LrSchedule::Cosine, lr, warmup, total, r);
  for (int64_t s = warmup; s <= total; ++s) {
    const double progress = double(s - warmup) / double(std::max<int64_t>(1, total - warmup));
    double factor = std::max(0.0, 0.5 * (1.0 + std::cos(std::numbers::pi * 2.0 * 0.5 * progress)));
    factor = factor * (1 - r) + r;
    CHECK(ll::learning_rate(c, s) == doctest::Approx(lr * factor).epsilon(1e-12));
  }
}

TEST_CASE("degenerate totals do not divide by zero") {
  const auto c = config(ll::LrSchedule::Cosine, 1e-3, 10, 10);
  CHECK(ll::learning_rate(c, 10) == doctest::Approx(1e-3));
  CHECK(ll::learning_rate(c, 11) == doctest::Approx(0.0));
  CHECK(std::isfinite(ll::learning_rate(config(ll::LrSchedule::Cosine, 1e-3, 10, 3), 12)));
  CHECK_THROWS_AS(ll::learning_rate(c, -1), ll::Error);
}
