#pragma once
// The LongLoRA training job: model + LoRA+ setup, windows from the data, AdamW steps with
// gradient accumulation and clipping, checkpoints, resume, metrics. train_longlora is a thin
// command line around run_training. Its parts: training_setup.h (backend, data, weights, plan,
// resume), step_strategy.h (the local or the data-parallel step with its checkpoints),
// training_report.h (setup lines, progress, metrics, summary); trainer.cpp runs the steps.
#include <cstdint>
#include <string>

#include "engine/parallel/communicator.h"
#include "engine/train/train_options.h"

namespace ll {

struct TrainResult {
  int64_t first_step = 0;  // optimizer steps already done when this process started
  int64_t steps_done = 0;  // optimizer steps completed in total
  double last_loss = 0.0;  // mean loss of the last step
  std::string checkpoint;  // the final checkpoint directory
};

// Runs the job `options` describes (validated here). Progress goes to stderr, the setup and
// summary to stdout, metrics to <out>/metrics.jsonl, the loss curve to <out>/loss_curve.svg
// and the final adapter to <out>/. Throws ll::Error with a message for the user on bad input
// or a diverged run (a non-finite loss or gradient names the step; checkpoints already
// written are kept).
TrainResult run_training(const TrainOptions& options);

// The same job as one rank of a data-parallel run (launched by `mpirun -np W`, see
// engine/parallel/communicator.h): every rank must pass the same options (checked at start: a
// rank that differs is named). Rank r reads its k = --grad-accum windows (SFT examples) of each
// step's W*k (engine/parallel/rank_windows.h), the gradients are averaged over the ranks and
// AdamW runs sharded (engine/train/sharded_step.h), so W ranks with k compute what one process
// with W*k computes. Rank 0 alone prints and writes the metrics, the loss curve and the adapter;
// checkpoints are sharded (engine/train/checkpoint.h). A world of one runs exactly the
// single-process path. An ll::Error thrown here on one rank leaves the others waiting in a
// collective: the caller ends the world with communicator.abort_world (train_longlora does).
TrainResult run_training(const TrainOptions& options, dist::Communicator& communicator);

}  // namespace ll
