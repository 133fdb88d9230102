#include "engine/train/sharded_step.h"

#include <span>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "engine/parallel/shard_layout.h"

namespace ll {
namespace {

// A checkpoint's optimizer state as rank `rank`'s shard of `to`, for a sharded optimizer: the
// checkpoint's shards re-sharded, or its full moments (a single-process checkpoint) cut up. The
// master weights are the model's (the checkpoint's adapter, loaded before).
dist::OptimizerShard checkpoint_shard(const LlamaModel& model, const Checkpoint& ck,
                                      const dist::ShardLayout& to, int rank) {
  const std::vector<int64_t> sizes = param_sizes(model.params());
  if (!ck.shards.empty())
    return dist::reshard_optimizer_state(dist::ShardLayout(sizes, ck.state.world_size), ck.shards,
                                         to, rank);
  dist::OptimizerShard full;  // the one shard of a world of one
  Backend& backend = model.backend();
  for (const TrainableParam& p : model.params()) {
    const auto [m, v] = checkpoint_moments(ck, p);
    std::vector<float> master(size_t(p.master->numel()));
    backend.download_f32(master.data(), *p.master);
    full.master.insert(full.master.end(), master.begin(), master.end());
    full.exp_avg.insert(full.exp_avg.end(), m->begin(), m->end());
    full.exp_avg_sq.insert(full.exp_avg_sq.end(), v->begin(), v->end());
  }
  const dist::OptimizerShard one[] = {std::move(full)};
  return dist::reshard_optimizer_state(dist::ShardLayout(sizes, 1), one, to, rank);
}

}  // namespace

ShardedStep::ShardedStep(LlamaModel& model, dist::Communicator& communicator,
                         const TrainOptions& options, std::string fingerprint,
                         const Checkpoint* resume)
    : model_(model),
      communicator_(communicator),
      options_(options),
      fingerprint_(std::move(fingerprint)),
      adamw_(adamw_config_of(options)) {
  if (resume != nullptr) model_.load_adapter(resume->adapter);
  dist::ShardTransportOptions transport;
  transport.timeout_s = options_.dist_timeout;
  sharded_ = std::make_unique<dist::ShardedOptimizer>(model_.backend(), communicator_,
                                                      model_.params(), transport);
  if (resume != nullptr)
    sharded_->import_shard(
        checkpoint_shard(model_, *resume, sharded_->layout(), communicator_.rank()));
}

GradientsReady ShardedStep::last_backward_hook(int64_t step) {
  // The sharded optimizer reduces each layer's gradients while the backward computes the
  // layers below.
  return [this, context = fmt::format("step {}", step)](std::span<const int> ps) {
    try {
      sharded_->gradients_ready(ps, context);
    } catch (const Error& e) {
      throw StepFailure(e.what());  // names rank and step already
    }
  };
}

double ShardedStep::finish_step(StepTotals& totals, double lr, int64_t step) {
  // The step's statistics over all ranks: sums, and whether every micro-batch had as many
  // labels as the first (sum of squares x W == square of sums iff all first counts agree).
  const double first = double(totals.first_count);
  std::vector<double> stats = {totals.loss_sum,
                               totals.mean_loss_sum,
                               double(totals.labelled),
                               double(totals.tokens),
                               totals.equal_counts ? 0.0 : 1.0,
                               first,
                               first * first};
  double grad_norm = 0.0;
  try {
    communicator_.all_reduce_sum(stats, fmt::format("step {} losses", step));
    grad_norm =
        sharded_->step(adamw_, lr, step, options_.max_grad_norm, fmt::format("step {}", step));
  } catch (const Error& e) {
    throw StepFailure(e.what());
  }
  totals.loss_sum = stats[0];
  totals.mean_loss_sum = stats[1];
  totals.labelled = int64_t(stats[2]);
  totals.tokens = int64_t(stats[3]);
  totals.equal_counts =
      stats[4] == 0.0 && stats[6] * double(communicator_.world_size()) == stats[5] * stats[5];
  return grad_norm;
}

std::string ShardedStep::save_checkpoint(const RunPoint& at) {
  const int world = communicator_.world_size();
  if (world == 1) {
    // A world of one writes a single-process checkpoint: its one shard is the full state.
    Checkpoint ck = checkpoint_without_moments(model_, options_, at, fingerprint_, 1);
    const dist::OptimizerShard full = sharded_->export_shard();
    auto exp_avg = dist::split_by_tensor(sharded_->layout(), full.exp_avg);
    auto exp_avg_sq = dist::split_by_tensor(sharded_->layout(), full.exp_avg_sq);
    for (size_t t = 0; t < model_.params().size(); ++t) {
      const TrainableParam& p = model_.params()[t];
      ck.moments.exp_avg.emplace(p.name, HostTensor{p.shape, std::move(exp_avg[t])});
      ck.moments.exp_avg_sq.emplace(p.name, HostTensor{p.shape, std::move(exp_avg_sq[t])});
    }
    return write_checkpoint(options_.out, ck, options_.keep_checkpoints);
  }
  Checkpoint ck;  // rank 0's carries the adapter and the state, the others' only the step
  if (communicator_.rank() == 0) {
    ck = checkpoint_without_moments(model_, options_, at, fingerprint_, world);
  } else {
    ck.state.step = at.step;
  }
  return write_sharded_checkpoint(options_.out, ck, sharded_->export_shard(), communicator_,
                                  options_.keep_checkpoints);
}

std::string ShardedStep::setup_line(const char* unit) const {
  const int world = communicator_.world_size();
  return fmt::format(
      "data parallel  {} rank{} ({}; collectives: {}), {} {} per rank and step = "
      "{} per step, optimizer state sharded ({} to {} elements per rank)\n",
      world, world == 1 ? "" : "s", communicator_.backend_name(), sharded_->transport_name(),
      options_.grad_accum, unit, world * options_.grad_accum,
      sharded_->layout().shard_size(world - 1), sharded_->layout().shard_size(0));
}

}  // namespace ll
