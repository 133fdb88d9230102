#include "engine/train/step_strategy.h"

#include "engine/train/local_step.h"
#include "engine/train/sharded_step.h"
#include "kernels/attention_kernel.h"

namespace ll {

bool uses_sharded_step(const TrainOptions& o, int world_size) {
  return world_size > 1 || o.sharded_optimizer;
}

std::unique_ptr<StepStrategy> make_step_strategy(LlamaModel& model,
                                                 dist::Communicator& communicator,
                                                 const TrainOptions& o,
                                                 const std::string& fingerprint,
                                                 const Checkpoint* resume) {
  if (uses_sharded_step(o, communicator.world_size()))
    return std::make_unique<ShardedStep>(model, communicator, o, fingerprint, resume);
  return std::make_unique<LocalStep>(model, o, fingerprint, resume);
}

AdamWConfig adamw_config_of(const TrainOptions& o) {
  AdamWConfig adamw;
  adamw.beta1 = o.adam_beta1;
  adamw.beta2 = o.adam_beta2;
  adamw.eps = o.adam_eps;
  adamw.weight_decay = o.weight_decay;
  return adamw;
}

Checkpoint checkpoint_without_moments(const LlamaModel& model, const TrainOptions& o,
                                      const RunPoint& at, const std::string& fingerprint,
                                      int world_size) {
  Checkpoint ck;
  ck.adapter = model.export_adapter(o.model);
  ck.state.step = at.step;
  ck.state.loader = at.loader;
  ck.state.seed = o.seed;
  ck.state.tokens_seen = at.tokens_seen;
  ck.state.model_fingerprint = fingerprint;
  ck.state.run_options_json = train_options_json(o);
  ck.state.world_size = world_size;
  ck.state.attention_kernel = attention_kernel_name(model.backend().traits().attention_kernel);
  return ck;
}

std::pair<const std::vector<float>*, const std::vector<float>*> checkpoint_moments(
    const Checkpoint& ck, const TrainableParam& p) {
  auto m = ck.moments.exp_avg.find(p.name);
  auto v = ck.moments.exp_avg_sq.find(p.name);
  LL_CHECK(m != ck.moments.exp_avg.end() && v != ck.moments.exp_avg_sq.end(),
           "the checkpoint has no optimizer state for {}", p.name);
  LL_CHECK(m->second.shape == p.shape && v->second.shape == p.shape,
           "the checkpoint's optimizer state for {} has another shape", p.name);
  return {&m->second.values, &v->second.values};
}

std::vector<int64_t> param_sizes(const std::vector<TrainableParam>& params) {
  std::vector<int64_t> sizes;  // [tensor count], params order: the flat layout's tensors
  for (const TrainableParam& p : params) sizes.push_back(p.master->numel());
  return sizes;
}

}  // namespace ll
