#include "optim/lr_schedule.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "common/error.h"

namespace ll {

LrSchedule lr_schedule_from_name(const std::string& name) {
  if (name == "constant") return LrSchedule::Constant;
  if (name == "cosine") return LrSchedule::Cosine;
  fail(
      "unknown learning-rate schedule \"{}\"; expected \"constant\" (linear warmup, then "
      "constant: LongLoRA's recipe) or \"cosine\" (linear warmup, then cosine decay)",
      name);
}

std::string lr_schedule_name(LrSchedule schedule) {
  switch (schedule) {
    case LrSchedule::Constant:
      return "constant";
    case LrSchedule::Cosine:
      return "cosine";
  }
  fail("unknown learning-rate schedule value {}", int(schedule));
}

double learning_rate(const LrScheduleConfig& config, int64_t step) {
  LL_CHECK(step >= 0, "learning rate asked for step {}; optimizer steps are numbered from 0", step);
  const int64_t warmup = std::max<int64_t>(config.warmup_steps, 0);
  if (step < warmup) return config.lr * double(step) / double(std::max<int64_t>(1, warmup));
  if (config.schedule == LrSchedule::Constant) return config.lr;

  const double span = double(std::max<int64_t>(1, config.total_steps - warmup));
  const double progress = std::clamp(double(step - warmup) / span, 0.0, 1.0);
  const double r = config.min_lr_ratio;
  return config.lr * (r + (1.0 - r) * 0.5 * (1.0 + std::cos(std::numbers::pi * progress)));
}

}  // namespace ll
