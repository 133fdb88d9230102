#include "engine/parallel/sharded_optimizer.h"

#include <algorithm>
#include <cmath>

#include "common/error.h"
#include "optim/grad_clip.h"

namespace ll::dist {

namespace {

// count elements of t starting at offset, as a flat [count] view.
Tensor flat_slice(const Tensor& t, int64_t offset, int64_t count) {
  return reshaped(t, {count}, offset);
}

Tensor flat(const Tensor& t) { return reshaped(t, {t.numel()}); }

std::vector<int64_t> element_counts(const std::vector<TrainableParam>& params) {
  std::vector<int64_t> counts;  // [tensor_count]
  counts.reserve(params.size());
  for (const TrainableParam& p : params) {
    LL_CHECK(p.master->data != nullptr, "sharded optimizer: parameter \"{}\" has no master weights",
             p.name);
    counts.push_back(p.master->numel());
  }
  return counts;
}

// master and grad must be F32 of the master's element count, the value F32 or BF16 (the CUDA
// backend's activation dtype); the moments, when present, F32 too.
void check_param(const TrainableParam& p) {
  const int64_t n = p.master->numel();
  struct Role {
    const char* what;
    const OwnedTensor* tensor;
    bool optional;  // the moments: absent means the shards start from zeros
    bool bf16_ok;   // the value the forward reads
  };
  const Role roles[] = {{"master", &p.master, false, false},
                        {"value", &p.value, false, true},
                        {"grad", &p.grad, false, false},
                        {"exp_avg", &p.exp_avg, true, false},
                        {"exp_avg_sq", &p.exp_avg_sq, true, false}};
  for (const Role& role : roles) {
    const Tensor& t = **role.tensor;
    if (role.optional && t.data == nullptr) continue;
    LL_CHECK(t.data != nullptr,
             "sharded optimizer: parameter \"{}\" has no {} tensor (was the model set up for "
             "training?)",
             p.name, role.what);
    LL_CHECK(t.dtype == DType::F32 || (role.bf16_ok && t.dtype == DType::BF16),
             "sharded optimizer: parameter \"{}\"'s {} is {}, expected F32{}", p.name, role.what,
             dtype_name(t.dtype), role.bf16_ok ? " or BF16" : "");
    LL_CHECK(t.numel() == n,
             "sharded optimizer: parameter \"{}\"'s {} has {} elements, its master {}", p.name,
             role.what, t.numel(), n);
  }
}

void check_shard(const OptimizerShard& shard, int rank, int world_size, int64_t size,
                 const char* what) {
  LL_CHECK(shard.rank == rank && shard.world_size == world_size,
           "{}: expected the optimizer shard of rank {} of {}, got rank {} of {}", what, rank,
           world_size, shard.rank, shard.world_size);
  const std::pair<const char*, const std::vector<float>*> parts[] = {
      {"master", &shard.master}, {"exp_avg", &shard.exp_avg}, {"exp_avg_sq", &shard.exp_avg_sq}};
  for (const auto& [name, values] : parts) {
    LL_CHECK(int64_t(values->size()) == size,
             "{}: rank {} of {}'s optimizer shard holds {} {} values, its layout {}: the shard "
             "belongs to another model, trainable set or world size, or is damaged",
             what, rank, world_size, values->size(), name, size);
  }
}

}  // namespace

ShardedOptimizer::ShardedOptimizer(Backend& backend, Communicator& communicator,
                                   std::vector<TrainableParam>& params,
                                   const ShardTransportOptions& options)
    : backend_(backend),
      communicator_(communicator),
      params_(params),
      layout_(element_counts(params), communicator.world_size()) {
  for (const TrainableParam& p : params_) check_param(p);
  transport_ = make_shard_transport(backend_, communicator_, layout_, options);
  pieces_ = layout_.pieces(communicator_.rank());
  started_.assign(params_.size(), false);
  const int64_t total = layout_.total_size();
  const int64_t shard = layout_.shard_size(communicator_.rank());
  flat_grad_ = backend_.allocate({total}, DType::F32);
  flat_value_ = backend_.allocate({total}, DType::F32);
  grad_shard_ = backend_.allocate({shard}, DType::F32);
  master_shard_ = backend_.allocate({shard}, DType::F32);
  exp_avg_shard_ = backend_.allocate({shard}, DType::F32);
  exp_avg_sq_shard_ = backend_.allocate({shard}, DType::F32);
  backend_.fill_zero(*exp_avg_shard_);
  backend_.fill_zero(*exp_avg_sq_shard_);
  // The grads become views of the flat buffer: the backward accumulates straight into what the
  // collectives read.
  for (size_t t = 0; t < params_.size(); ++t) {
    TrainableParam& p = params_[t];
    const int64_t offset = layout_.tensor_offset(int(t)), n = layout_.tensor_sizes()[t];
    OwnedTensor view{reshaped(*flat_grad_, p.grad->shape, offset), flat_grad_.storage};
    if (n > 0) backend_.copy(flat(*view), flat(*p.grad));
    p.grad = std::move(view);
  }
  for (const ShardPiece& piece : pieces_) {
    const TrainableParam& p = params_[size_t(piece.tensor)];
    const std::pair<const OwnedTensor*, const OwnedTensor*> from_to[] = {
        {&p.master, &master_shard_},
        {&p.exp_avg, &exp_avg_shard_},
        {&p.exp_avg_sq, &exp_avg_sq_shard_}};
    for (const auto& [source, target] : from_to) {
      if ((*source)->data == nullptr) continue;  // no moments: zeros
      backend_.copy(flat_slice(**target, piece.offset_in_shard, piece.count),
                    flat_slice(**source, piece.offset_in_tensor, piece.count));
    }
  }
}

void ShardedOptimizer::start_buckets(const std::vector<bool>& start, const std::string& context) {
  const std::string what = context + " gradients";
  int64_t begin = -1, end = -1;  // the run being collected
  for (size_t t = 0; t < params_.size(); ++t) {
    if (!start[t] || started_[t]) continue;
    started_[t] = true;
    const int64_t offset = layout_.tensor_offset(int(t));
    if (offset != end) {
      if (begin < end) transport_->start_reduce(*flat_grad_, begin, end, *grad_shard_, what);
      begin = offset;
    }
    end = offset + layout_.tensor_sizes()[t];
  }
  if (begin < end) transport_->start_reduce(*flat_grad_, begin, end, *grad_shard_, what);
}

void ShardedOptimizer::gradients_ready(std::span<const int> params, const std::string& context) {
  std::vector<bool> start(params_.size(), false);
  for (int t : params) {
    LL_CHECK(t >= 0 && size_t(t) < params_.size(),
             "sharded optimizer: gradients reported for parameter {} of {}", t, params_.size());
    LL_CHECK(!started_[size_t(t)] && !start[size_t(t)],
             "sharded optimizer: the gradients of \"{}\" were reported twice in one step",
             params_[size_t(t)].name);
    start[size_t(t)] = true;
  }
  start_buckets(start, context);
}

double ShardedOptimizer::step(const AdamWConfig& config, double lr, int64_t step,
                              double max_grad_norm, const std::string& context) {
  const int world = communicator_.world_size();
  start_buckets(std::vector<bool>(params_.size(), true), context);
  transport_->finish_reduces(context + " gradients");
  started_.assign(params_.size(), false);

  // Per piece, so that a world of one sums exactly as gradient_norm does (tensor by tensor).
  std::vector<double> sum_squares = {0.0};  // [1]
  for (const ShardPiece& piece : pieces_) {
    sum_squares[0] +=
        backend_.sum_squares(flat_slice(*grad_shard_, piece.offset_in_shard, piece.count));
  }
  transport_->all_reduce_sum(sum_squares, context + " gradient norm");
  // The shard holds the sum over ranks; the norm and the update are those of the mean.
  const double norm = std::sqrt(sum_squares[0]) / double(world);
  LL_CHECK(std::isfinite(norm),
           "{}: the gradient norm is not finite ({}): training diverged "
           "(lower the learning rate?) or the data or model holds NaN/Inf",
           context, norm);

  if (grad_shard_->numel() > 0) {
    AdamWStep update;
    update.config = config;
    update.lr = lr;
    update.step = step;
    update.grad_scale = float(clip_coefficient(norm, max_grad_norm) / double(world));
    // param = the master shard itself: the transports gather from a buffer of its own.
    backend_.adamw_step(*master_shard_, *master_shard_, *grad_shard_, *exp_avg_shard_,
                        *exp_avg_sq_shard_, update);
  }

  transport_->all_gather(*master_shard_, *flat_value_, context + " parameters");
  for (size_t t = 0; t < params_.size(); ++t) {
    const int64_t n = layout_.tensor_sizes()[t];
    if (n == 0) continue;
    const Tensor gathered = flat_slice(*flat_value_, layout_.tensor_offset(int(t)), n);
    const TrainableParam& p = params_[t];
    backend_.copy(flat(*p.master), gathered);
    if (p.value->data != p.master->data) backend_.copy(flat(*p.value), gathered);  // may round
  }
  return norm;
}

OptimizerShard ShardedOptimizer::export_shard() const {
  OptimizerShard shard;
  shard.rank = communicator_.rank();
  shard.world_size = communicator_.world_size();
  const std::pair<const OwnedTensor*, std::vector<float>*> from_to[] = {
      {&master_shard_, &shard.master},
      {&exp_avg_shard_, &shard.exp_avg},
      {&exp_avg_sq_shard_, &shard.exp_avg_sq}};
  for (const auto& [source, target] : from_to) {
    target->resize(size_t((*source)->numel()));
    backend_.download_f32(target->data(), **source);
  }
  return shard;
}

void ShardedOptimizer::import_shard(const OptimizerShard& shard) {
  check_shard(shard, communicator_.rank(), communicator_.world_size(),
              layout_.shard_size(communicator_.rank()), "importing the optimizer state");
  backend_.upload_f32(*master_shard_, shard.master.data());
  backend_.upload_f32(*exp_avg_shard_, shard.exp_avg.data());
  backend_.upload_f32(*exp_avg_sq_shard_, shard.exp_avg_sq.data());
}

OptimizerShard reshard_optimizer_state(const ShardLayout& from,
                                       std::span<const OptimizerShard> shards,
                                       const ShardLayout& to, int new_rank) {
  LL_CHECK(int64_t(shards.size()) == from.world_size(),
           "re-sharding the optimizer state: {} shards given for a checkpoint of {} ranks",
           shards.size(), from.world_size());
  for (int r = 0; r < from.world_size(); ++r)
    check_shard(shards[size_t(r)], r, from.world_size(), from.shard_size(r),
                "re-sharding the optimizer state");
  OptimizerShard result;
  result.rank = new_rank;
  result.world_size = to.world_size();
  const size_t size = size_t(to.shard_size(new_rank));
  result.master.resize(size);
  result.exp_avg.resize(size);
  result.exp_avg_sq.resize(size);
  for (const ReshardPiece& piece : reshard_pieces(from, to, new_rank)) {
    const OptimizerShard& old = shards[size_t(piece.old_rank)];
    auto move = [&](const std::vector<float>& source, std::vector<float>& target) {
      std::copy_n(source.begin() + piece.offset_in_old_shard, piece.count,
                  target.begin() + piece.offset_in_new_shard);
    };
    move(old.master, result.master);
    move(old.exp_avg, result.exp_avg);
    move(old.exp_avg_sq, result.exp_avg_sq);
  }
  return result;
}

OptimizerShard full_optimizer_state(const ShardLayout& from,
                                    std::span<const OptimizerShard> shards) {
  return reshard_optimizer_state(from, shards, ShardLayout(from.tensor_sizes(), 1), 0);
}

std::vector<std::vector<float>> split_by_tensor(const ShardLayout& layout,
                                                std::span<const float> flat) {
  LL_CHECK(int64_t(flat.size()) == layout.total_size(),
           "splitting optimizer state by tensor: {} values for {} trainable elements", flat.size(),
           layout.total_size());
  std::vector<std::vector<float>> tensors;  // [tensor_count][tensor size]
  for (int t = 0; t < layout.tensor_count(); ++t) {
    const auto begin = flat.begin() + layout.tensor_offset(t);
    tensors.emplace_back(begin, begin + layout.tensor_sizes()[size_t(t)]);
  }
  return tensors;
}

}  // namespace ll::dist
