#pragma once
// What a training run tells, all from rank 0 (the other ranks' report is silent): the setup
// lines and the closing summary on stdout, the progress line and epoch notes on stderr,
// <out>/metrics.jsonl (steps, the first step's memory, epochs, checkpoints) and, at the end,
// the adapter with longlora.json and <out>/loss_curve.svg.
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include "engine/train/metrics_log.h"
#include "engine/train/progress.h"
#include "engine/train/step_strategy.h"
#include "engine/train/train_options.h"
#include "engine/train/training_setup.h"

namespace ll {

class TrainingReport {
 public:
  // Rank 0 creates --out and opens its metrics.jsonl (kept up to `first_step` when the run
  // resumed). `first_step`: the optimizer steps done before this process started.
  TrainingReport(const TrainOptions& options, const TrainingSetup& setup, int64_t first_step);

  // The setup lines: model, context, what is trained, data, optimizer, backend, the data
  // parallel step, the resume.
  void print_setup(const StepStrategy& strategy) const;
  // After each step (m.step): the first step's memory beside the plan, the step's metrics
  // every --log-every steps and at the last, a finished pass over the data (epoch_before: the
  // epoch the step began in), the progress line (tokens_per_s: this run's so far).
  void step_done(const StepMetrics& m, int64_t epoch_before, double tokens_per_s);
  void checkpoint_written(int64_t step, const std::string& path);
  void finish_progress();
  // The adapter, longlora.json and the loss curve under --out, then the closing lines
  // (run_tokens: tokens read since t_loop, when this process's first step began).
  void summary(int64_t steps_done, double last_loss, int64_t run_tokens,
               std::chrono::steady_clock::time_point t_loop, const std::string& checkpoint,
               const StepStrategy& strategy);

 private:
  const TrainOptions& options_;
  const TrainingSetup& setup_;
  int64_t first_step_;
  std::optional<MetricsLog> metrics_;    // rank 0's
  ProgressLine progress_{"train step"};  // updated by rank 0 only
};

}  // namespace ll
