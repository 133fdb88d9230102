#include "engine/train/local_step.h"

#include <cmath>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "engine/parallel/shard_layout.h"
#include "engine/parallel/sharded_optimizer.h"
#include "engine/train/optimizer_step.h"
#include "optim/grad_clip.h"

namespace ll {
namespace {

void restore_checkpoint(LlamaModel& model, const Checkpoint& ck) {
  model.load_adapter(ck.adapter);
  Backend& backend = model.backend();
  for (TrainableParam& p : model.params()) {
    const auto [m, v] = checkpoint_moments(ck, p);
    backend.upload_f32(*p.exp_avg, m->data());
    backend.upload_f32(*p.exp_avg_sq, v->data());
  }
}

// A sharded checkpoint resumed by one process: its shards put together are the full moments.
void restore_sharded_into_model(LlamaModel& model, const Checkpoint& ck) {
  model.load_adapter(ck.adapter);
  const dist::ShardLayout from(param_sizes(model.params()), ck.state.world_size);
  const dist::OptimizerShard full = dist::full_optimizer_state(from, ck.shards);
  const auto exp_avg = dist::split_by_tensor(from, full.exp_avg);
  const auto exp_avg_sq = dist::split_by_tensor(from, full.exp_avg_sq);
  Backend& backend = model.backend();
  for (size_t t = 0; t < model.params().size(); ++t) {
    TrainableParam& p = model.params()[t];
    backend.upload_f32(*p.exp_avg, exp_avg[t].data());
    backend.upload_f32(*p.exp_avg_sq, exp_avg_sq[t].data());
  }
}

}  // namespace

LocalStep::LocalStep(LlamaModel& model, const TrainOptions& options, std::string fingerprint,
                     const Checkpoint* resume)
    : model_(model),
      options_(options),
      fingerprint_(std::move(fingerprint)),
      adamw_(adamw_config_of(options)) {
  if (resume == nullptr) return;
  if (resume->shards.empty()) {
    restore_checkpoint(model_, *resume);
  } else {
    restore_sharded_into_model(model_, *resume);
  }
}

double LocalStep::finish_step(StepTotals&, double lr, int64_t step) {
  Backend& backend = model_.backend();
  const double grad_norm = gradient_norm(backend, model_.params());
  if (!std::isfinite(grad_norm))
    throw StepFailure(
        fmt::format("step {}: the gradient norm is not finite (diverged: lower --lr?)", step));
  adamw_update_all(backend, model_.params(), adamw_, lr, step,
                   float(clip_coefficient(grad_norm, options_.max_grad_norm)));
  return grad_norm;
}

std::string LocalStep::save_checkpoint(const RunPoint& at) {
  Checkpoint ck = checkpoint_without_moments(model_, options_, at, fingerprint_, 1);
  Backend& backend = model_.backend();
  for (const TrainableParam& p : model_.params()) {
    HostTensor m{p.shape, {}}, v{p.shape, {}};
    m.values.resize(size_t(p.exp_avg->numel()));
    v.values.resize(size_t(p.exp_avg_sq->numel()));
    backend.download_f32(m.values.data(), *p.exp_avg);
    backend.download_f32(v.values.data(), *p.exp_avg_sq);
    ck.moments.exp_avg.emplace(p.name, std::move(m));
    ck.moments.exp_avg_sq.emplace(p.name, std::move(v));
  }
  return write_checkpoint(options_.out, ck, options_.keep_checkpoints);
}

}  // namespace ll
