#pragma once
// The optimizer step after a step's micro-batches, and the checkpoint of a step, in two
// implementations: LocalStep (one process; the model holds the AdamW moments) and ShardedStep
// (the data-parallel step of engine/parallel/sharded_optimizer.h: gradients averaged over the
// ranks, moments sharded). make_step_strategy picks one as before: the sharded step with
// several ranks or --sharded-optimizer. Each restores a resumed checkpoint's optimizer state
// and writes its own checkpoints; the training loop is written once over this interface.
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "common/error.h"
#include "data/window_loader.h"
#include "engine/parallel/communicator.h"
#include "engine/train/checkpoint.h"
#include "engine/train/train_options.h"
#include "model/llama_model.h"
#include "optim/adamw.h"

namespace ll {

// A step that failed with a message that already names the step (and, for a collective, the
// rank); the training loop adds where the last good checkpoint is.
struct StepFailure : Error {
  using Error::Error;
};

// A step's sums over its micro-batches: this rank's, then (finish_step) every rank's.
struct StepTotals {
  double loss_sum = 0.0;       // the micro-batches' summed losses
  double mean_loss_sum = 0.0;  // the micro-batches' mean losses, summed
  int64_t labelled = 0;        // labelled positions
  int64_t tokens = 0;          // tokens read
  int64_t first_count = -1;    // labelled positions of the first micro-batch
  bool equal_counts = true;    // every micro-batch had as many as the first
};

// Where a run stands at a checkpoint.
struct RunPoint {
  int64_t step = 0;         // optimizer steps done
  LoaderPosition loader;    // the next read of the shared stream
  int64_t tokens_seen = 0;  // labelled tokens trained on
};

class StepStrategy {
 public:
  virtual ~StepStrategy() = default;
  // The backward hook of step `step`'s (1-based) last micro-batch; empty for none. It throws
  // StepFailure.
  virtual GradientsReady last_backward_hook(int64_t step) = 0;
  // Ends step `step` (1-based) after its micro-batches' backward: `totals` become the sums over
  // every rank, the gradient is clipped at --max-grad-norm and AdamW runs at `lr`. Returns the
  // gradient norm before clipping. A diverged or failed step throws StepFailure.
  virtual double finish_step(StepTotals& totals, double lr, int64_t step) = 0;
  // Writes the checkpoint at `at` under --out (keeping --keep-checkpoints); returns its path.
  virtual std::string save_checkpoint(const RunPoint& at) = 0;
  // The setup's "data parallel" line (`unit`: what a micro-batch is), "" for none.
  virtual std::string setup_line(const char* unit) const = 0;
  // What the collectives cost ("" when not measured).
  virtual std::string timing_summary() const = 0;
};

// The data-parallel step: always with several ranks, on request in a world of one (the same
// path through NCCL on one GPU).
bool uses_sharded_step(const TrainOptions& options, int world_size);

// The strategy for this run, on `model` (built with optimizer moments exactly when the step is
// local). `resume`: the checkpoint the run continues (checked by the setup), or null; its
// optimizer state (and, for the sharded step, its adapter) is loaded here.
std::unique_ptr<StepStrategy> make_step_strategy(LlamaModel& model,
                                                 dist::Communicator& communicator,
                                                 const TrainOptions& options,
                                                 const std::string& fingerprint,
                                                 const Checkpoint* resume);

// For the implementations. AdamW as the options set it.
AdamWConfig adamw_config_of(const TrainOptions& options);
// The checkpoint at `at` without optimizer state: the adapter and the trainer state.
Checkpoint checkpoint_without_moments(const LlamaModel& model, const TrainOptions& options,
                                      const RunPoint& at, const std::string& fingerprint,
                                      int world_size);
// A single-process checkpoint's moments of one parameter: exp_avg and exp_avg_sq.
std::pair<const std::vector<float>*, const std::vector<float>*> checkpoint_moments(
    const Checkpoint& ck, const TrainableParam& p);
// The trained tensors' sizes, params order: the flat layout's tensors.
std::vector<int64_t> param_sizes(const std::vector<TrainableParam>& params);

}  // namespace ll
