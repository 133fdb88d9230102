#pragma once
// Learning-rate schedules: linear warmup from 0, then constant (LongLoRA's recipe:
// "constant_with_warmup", 20 warmup steps) or cosine decay to min_lr_ratio * lr.
#include <cstdint>
#include <string>

namespace ll {

enum class LrSchedule { Constant, Cosine };

// "constant" or "cosine"; throws ll::Error naming the accepted values otherwise.
LrSchedule lr_schedule_from_name(const std::string& name);
std::string lr_schedule_name(LrSchedule schedule);

struct LrScheduleConfig {
  LrSchedule schedule = LrSchedule::Constant;
  double lr = 2e-5;
  int64_t warmup_steps = 20;
  int64_t total_steps = 1000;  // cosine decays over [warmup_steps, total_steps)
  double min_lr_ratio = 0.0;   // cosine floor as a fraction of lr
};

// The learning rate of optimizer step `step` (0-based), as transformers' schedulers give it:
// lr * step / max(1, warmup) while step < warmup (so step 0 has lr 0 when warmup > 0, as in
// get_constant_schedule_with_warmup), then lr (constant), or for cosine
// lr * (r + (1 - r) * 0.5 * (1 + cos(pi * p))), p = (step - warmup) / max(1, total - warmup)
// clamped to [0, 1], r = min_lr_ratio.
double learning_rate(const LrScheduleConfig& config, int64_t step);

}  // namespace ll
