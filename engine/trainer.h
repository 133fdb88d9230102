#pragma once
// The LongLoRA training job: model + LoRA+ setup, windows from the data, AdamW steps with
// gradient accumulation and clipping, checkpoints, resume, metrics. train_longlora is a thin
// command line around run_training.
#include <cstdint>
#include <string>

#include "engine/train_options.h"

namespace ll {

struct TrainResult {
  int64_t first_step = 0;   // optimizer steps already done when this process started
  int64_t steps_done = 0;   // optimizer steps completed in total
  double last_loss = 0.0;   // mean loss of the last step
  std::string checkpoint;   // the final checkpoint directory
};

// Runs the job `options` describes (validated here). Progress goes to stderr, the setup and
// summary to stdout, metrics to <out>/metrics.jsonl, the loss curve to <out>/loss_curve.svg
// and the final adapter to <out>/. Throws ll::Error with a message for the user on bad input
// or a diverged run (a non-finite loss or gradient names the step; checkpoints already
// written are kept).
TrainResult run_training(const TrainOptions& options);

}  // namespace ll
