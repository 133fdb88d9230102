#pragma once
// The single-process optimizer step: the gradient norm over every trained tensor, clipping
// and AdamW on the model's backend (engine/train/optimizer_step.h), with the moments the model
// holds. Its checkpoints hold the full moments (a world of one); it resumes from either kind
// (a sharded checkpoint's shards are put together).
#include <string>

#include "engine/train/step_strategy.h"

namespace ll {

class LocalStep final : public StepStrategy {
 public:
  // `model` must have optimizer moments; `resume` (or null): the checkpoint whose parameters and
  // moments are loaded into it. Kept by reference: model and options outlive this.
  LocalStep(LlamaModel& model, const TrainOptions& options, std::string fingerprint,
            const Checkpoint* resume);

  GradientsReady last_backward_hook(int64_t) override { return {}; }
  double finish_step(StepTotals& totals, double lr, int64_t step) override;
  std::string save_checkpoint(const RunPoint& at) override;
  std::string setup_line(const char*) const override { return ""; }
  std::string timing_summary() const override { return ""; }

 private:
  LlamaModel& model_;
  const TrainOptions& options_;
  std::string fingerprint_;
  AdamWConfig adamw_;
};

}  // namespace ll
