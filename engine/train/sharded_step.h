#pragma once
// The data-parallel optimizer step (engine/parallel/sharded_optimizer.h): the step's sums and
// gradients reduced over the ranks (each layer's gradients during the backward of the step's
// last micro-batch), AdamW on this rank's shard, parameters all-gathered. Its checkpoints:
// sharded with several ranks (every rank its shard, rank 0 the rest), a single-process one
// in a world of one. It resumes from either kind, re-sharded for this world.
#include <memory>
#include <string>

#include "engine/parallel/sharded_optimizer.h"
#include "engine/train/step_strategy.h"

namespace ll {

class ShardedStep final : public StepStrategy {
 public:
  // Loads `resume`'s adapter (if any) into `model`, then shards the optimizer state over the
  // ranks: seeded from the model, or `resume`'s state re-sharded. Every rank constructs it
  // with the same arguments. Kept by reference: model, communicator and options outlive this.
  ShardedStep(LlamaModel& model, dist::Communicator& communicator, const TrainOptions& options,
              std::string fingerprint, const Checkpoint* resume);

  GradientsReady last_backward_hook(int64_t step) override;
  double finish_step(StepTotals& totals, double lr, int64_t step) override;
  std::string save_checkpoint(const RunPoint& at) override;
  std::string setup_line(const char* unit) const override;
  std::string timing_summary() const override { return sharded_->timing_summary(); }

 private:
  LlamaModel& model_;
  dist::Communicator& communicator_;
  const TrainOptions& options_;
  std::string fingerprint_;
  AdamWConfig adamw_;
  std::unique_ptr<dist::ShardedOptimizer> sharded_;
};

}  // namespace ll
