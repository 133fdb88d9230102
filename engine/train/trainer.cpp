#include "engine/train/trainer.h"

#include <signal.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

#include <fmt/format.h>

#include "common/error.h"
#include "engine/parallel/rank_windows.h"
#include "engine/train/step_strategy.h"
#include "engine/train/training_report.h"
#include "engine/train/training_setup.h"
#include "kernels/attention_pattern.h"
#include "optim/lr_schedule.h"

namespace ll {
namespace {

using Clock = std::chrono::steady_clock;

// Test-only fault injection: LL_TEST_DIST_FAULT="RANK:STEP:kill|hang" makes rank RANK die
// (SIGKILL, as a crash or the OOM killer would) or hang at the start of step STEP.
void inject_test_fault(int rank, int64_t step) {
  const char* env = std::getenv("LL_TEST_DIST_FAULT");
  if (env == nullptr) return;
  int fault_rank = -1;
  long long fault_step = -1;
  char what[8] = {};
  if (std::sscanf(env, "%d:%lld:%7s", &fault_rank, &fault_step, what) != 3) return;
  if (fault_rank != rank || fault_step != step) return;
  fmt::print(stderr, "rank {}: LL_TEST_DIST_FAULT: {} at step {}\n", rank, what, step);
  std::fflush(stderr);
  if (std::string_view(what) == "kill") ::raise(SIGKILL);
  for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
}

// The shared read stream (engine/parallel/rank_windows.h): the reads consumed by all ranks so
// far. Each step rank r reads its block of the step's W x k; a world of one just goes on
// reading, and its position is the source's.
class SharedReads {
 public:
  SharedReads(SequenceSource& source, int world, int rank, int64_t per_rank)
      : source_(source),
        world_(world),
        rank_(rank),
        per_rank_(per_rank),
        per_epoch_(source.per_epoch()),
        read_(dist::read_of_position(source.position(), per_epoch_)) {}
  // Where the next step starts, as a checkpoint records it.
  LoaderPosition position() const {
    return world_ == 1 ? source_.position() : dist::loader_position(read_, per_epoch_);
  }
  // Puts the source at this rank's block of the step (a world of one reads on).
  void begin_step() {
    if (world_ > 1) source_.seek(dist::loader_position(read_ + rank_ * per_rank_, per_epoch_));
  }
  void end_step() { read_ += world_ * per_rank_; }

 private:
  SequenceSource& source_;
  int world_, rank_;
  int64_t per_rank_, per_epoch_;
  int64_t read_;
};

// Where the run starts: step 0, or the resumed checkpoint's step with its source position.
struct StartPoint {
  int64_t step = 0;
  int64_t tokens_seen = 0;
};

StartPoint start_point(TrainingSetup& s) {
  if (!s.resume) return {};
  s.source->seek(s.resume->state.loader);
  const StartPoint start{s.resume->state.step, s.resume->state.tokens_seen};
  s.resume.reset();  // the strategy has its optimizer state
  return start;
}

// The steps of one run over a set-up model, data and step strategy.
class TrainingLoop {
 public:
  TrainingLoop(const TrainOptions& o, TrainingSetup& s, StepStrategy& strategy)
      : o_(o),
        s_(s),
        strategy_(strategy),
        start_(start_point(s)),
        reads_(*s.source, s.world, s.rank, o.grad_accum),
        report_(o, s, start_.step),
        step_(start_.step),
        tokens_seen_(start_.tokens_seen),
        last_checkpoint_(s.resumed_from) {
    schedule_.schedule = lr_schedule_from_name(o.schedule);
    schedule_.lr = o.lr;
    schedule_.warmup_steps = o.warmup;
    schedule_.total_steps = o.steps;
  }

  TrainResult run();

 private:
  StepTotals run_micro_batches();
  void record_step(const StepTotals& totals, double lr, double grad_norm, int64_t epoch_before,
                   Clock::time_point t_step);
  void save(int64_t at_step);
  std::string last_good() const {
    return last_checkpoint_.empty() ? std::string("no checkpoint was written in this run")
                                    : "the last good checkpoint is " + last_checkpoint_;
  }

  const TrainOptions& o_;
  TrainingSetup& s_;
  StepStrategy& strategy_;
  StartPoint start_;
  SharedReads reads_;
  TrainingReport report_;
  LrScheduleConfig schedule_;
  int64_t step_;
  int64_t tokens_seen_;
  int64_t tokens_this_run_ = 0;
  double last_loss_ = 0.0;
  std::string last_checkpoint_;
  TrainingSequence seq_;
  Clock::time_point t_loop_;
};

TrainResult TrainingLoop::run() {
  report_.print_setup(strategy_);
  t_loop_ = Clock::now();
  while (step_ < o_.steps) {
    const auto t_step = Clock::now();
    inject_test_fault(s_.rank, step_ + 1);
    const int64_t epoch_before = reads_.position().epoch;
    StepTotals totals = run_micro_batches();
    reads_.end_step();
    const double lr = learning_rate(schedule_, step_);
    double grad_norm = 0.0;
    try {
      grad_norm = strategy_.finish_step(totals, lr, step_ + 1);
    } catch (const StepFailure& e) {
      fail("{}; {}", e.what(), last_good());
    }
    ++step_;
    record_step(totals, lr, grad_norm, epoch_before, t_step);
    if (o_.save_every > 0 && step_ % o_.save_every == 0 && step_ < o_.steps) save(step_);
  }
  report_.finish_progress();

  // The final checkpoint (unless this exact step is already saved) and the adapter at <out>/.
  // (A run resumed at its last step has nothing new to save.)
  if (step_ != start_.step || last_checkpoint_.empty()) save(step_);
  report_.summary(step_, last_loss_, tokens_this_run_, t_loop_, last_checkpoint_, strategy_);
  TrainResult result;
  result.first_step = start_.step;
  result.steps_done = step_;
  result.last_loss = last_loss_;
  result.checkpoint = last_checkpoint_;
  return result;
}

// The forward and backward of this rank's micro-batches of step step_ + 1.
StepTotals TrainingLoop::run_micro_batches() {
  StepTotals t;
  ForwardSpec& spec = s_.spec;
  try {
    s_.model->zero_grads();
    reads_.begin_step();
    for (int64_t micro = 0; micro < o_.grad_accum; ++micro) {
      s_.source->next(seq_);
      const int64_t n = int64_t(seq_.tokens.size());
      // As the Hugging Face Trainer does: each micro-batch's loss is the mean over its
      // labelled tokens, and the step averages the micro-batches (windows all have N-1
      // labels, so this is the step's mean over labelled tokens).
      const float loss_scale = float(1.0 / double(o_.grad_accum * seq_.labelled));
      if (spec.attn_mode != AttnMode::Dense) spec.group_size = s2_group_size(n, o_.group_ratio);
      const GradientsReady on_ready =
          micro + 1 == o_.grad_accum ? strategy_.last_backward_hook(step_ + 1) : GradientsReady{};
      const LossSum ls =
          s_.model->forward_backward(seq_.tokens, seq_.targets, spec, loss_scale, on_ready);
      LL_CHECK(ls.count == seq_.labelled, "the model scored {} positions, the data labels {}",
               ls.count, seq_.labelled);
      if (t.first_count < 0) t.first_count = ls.count;
      t.equal_counts = t.equal_counts && ls.count == t.first_count;
      t.loss_sum += ls.sum;
      t.mean_loss_sum += ls.sum / double(ls.count);
      t.labelled += ls.count;
      t.tokens += n;
    }
  } catch (const StepFailure& e) {
    fail("{}; {}", e.what(), last_good());
  } catch (const Error& e) {
    fail("step {}: {}; {}", step_ + 1, e.what(), last_good());
  }
  return t;
}

// The step's metrics (step_ is done), to the report.
void TrainingLoop::record_step(const StepTotals& t, double lr, double grad_norm,
                               int64_t epoch_before, Clock::time_point t_step) {
  tokens_seen_ += t.labelled;
  tokens_this_run_ += t.tokens;
  const auto now = Clock::now();
  StepMetrics m;
  m.step = step_;
  // The mean of the micro-batches' mean losses; with equal counts (windows) it is the pooled
  // mean, computed as such so that window runs log exactly what they always did.
  m.loss = t.equal_counts ? t.loss_sum / double(t.labelled)
                          : t.mean_loss_sum / double(s_.world * o_.grad_accum);
  m.lr = lr;
  m.grad_norm = grad_norm;
  m.tokens_per_s = double(t.tokens) / std::chrono::duration<double>(now - t_step).count();
  m.tokens = tokens_seen_;
  m.epoch = reads_.position().epoch;
  m.elapsed_s = std::chrono::duration<double>(now - s_.t_start).count();
  const double run_s = std::chrono::duration<double>(now - t_loop_).count();
  report_.step_done(m, epoch_before, double(tokens_this_run_) / run_s);
  last_loss_ = m.loss;
}

void TrainingLoop::save(int64_t at_step) {
  last_checkpoint_ = strategy_.save_checkpoint({at_step, reads_.position(), tokens_seen_});
  report_.checkpoint_written(at_step, last_checkpoint_);
}

}  // namespace

TrainResult run_training(const TrainOptions& o) {
  dist::SingleProcessCommunicator single;
  return run_training(o, single);
}

TrainResult run_training(const TrainOptions& o, dist::Communicator& communicator) {
  validate_train_options(o);
  if (o.dry_run) {
    const int world = communicator.world_size();
    bool fits = true;
    if (communicator.rank() == 0)
      fits = print_memory_plan(o, o.world_size > 0 ? int(o.world_size) : world);
    LL_CHECK(fits, "the plan does not fit the memory given (see what would fit above)");
    return TrainResult{};
  }
  TrainingSetup setup = set_up_training(o, communicator);
  const std::unique_ptr<StepStrategy> strategy = make_step_strategy(
      *setup.model, communicator, o, setup.fingerprint, setup.resume ? &*setup.resume : nullptr);
  return TrainingLoop(o, setup, *strategy).run();
}

}  // namespace ll
