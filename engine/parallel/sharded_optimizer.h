#pragma once
// The data-parallel optimizer step, ZeRO-1/2 style: gradients (views into one flat [T] buffer)
// are summed over the ranks into per-rank shards (shard_layout.h), each rank clips and runs
// AdamW on its shard only (fp32 master weights and moments), and the updated shards are
// all-gathered into every rank's parameters, through a ShardTransport (host over MPI, or NCCL).
// gradients_ready, passed as the model's backward hook on a step's last micro-batch, starts each
// layer's reduction while the backward goes on. Each rank scales its losses as a single process
// with its own accumulation k does; the step takes the mean over ranks. The params' moments, when
// present, seed the shards; without them the shards start from zeros. A world of one updates
// bit for bit like engine/train/optimizer_step.h. Design: docs/subsystems/data-parallel.md.
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "engine/parallel/communicator.h"
#include "engine/parallel/shard_layout.h"
#include "engine/parallel/shard_transport.h"
#include "kernels/backend.h"
#include "model/llama_model.h"
#include "optim/adamw.h"

namespace ll::dist {

// One rank's optimizer state as host vectors: what a checkpoint writes per rank.
struct OptimizerShard {
  int rank = 0;
  int world_size = 1;
  std::vector<float> master;      // [shard_size] fp32 master weights
  std::vector<float> exp_avg;     // [shard_size]
  std::vector<float> exp_avg_sq;  // [shard_size]
};

class ShardedOptimizer {
 public:
  // params: the trained tensors in the fixed order every rank uses (LlamaModel::params()); each
  // must have F32 master and grad tensors of its shape and a value of its shape (F32 or BF16);
  // exp_avg / exp_avg_sq are optional (see the top of this file). Kept by
  // reference: the vector must outlive this object, and its grad tensors are replaced by views
  // of the optimizer's flat gradient buffer (their values kept). Construct after the params hold
  // their starting values (adapter loaded, checkpoint restored). Throws ll::Error for a
  // parameter without training state or a backend this build has no transport for.
  ShardedOptimizer(Backend& backend, Communicator& communicator,
                   std::vector<TrainableParam>& params, const ShardTransportOptions& options = {});

  const ShardLayout& layout() const { return layout_; }
  int rank() const { return communicator_.rank(); }
  int world_size() const { return communicator_.world_size(); }
  // The transport's name and what its collectives cost so far ("" when not measured).
  std::string transport_name() const { return transport_->name(); }
  std::string timing_summary() const { return transport_->timing_summary(); }

  // The backward hook: the gradients of `params` (indices into the params vector) are final for
  // this step; their reduction starts now (contiguous runs of the flat vector as one bucket).
  // Each parameter at most once per step (a second report throws ll::Error). Every rank must
  // report the same parameters in the same order.
  void gradients_ready(std::span<const int> params, const std::string& context);

  // One optimizer step (1-based `step` for AdamW's bias correction) at learning rate `lr`,
  // clipping the mean gradient's norm at max_grad_norm (<= 0: no clipping). `context` names
  // the step in collective timeout messages ("step 12"). Returns the mean gradient's norm.
  // A non-finite norm throws ll::Error on every rank (they all see the same all-reduced value)
  // before anything is updated.
  double step(const AdamWConfig& config, double lr, int64_t step, double max_grad_norm,
              const std::string& context);

  // This rank's master weights and moments.
  OptimizerShard export_shard() const;
  // Replaces this rank's master weights and moments (resume). The shard must be for this rank
  // and world size with this layout's shard size (re-shard first with reshard_optimizer_state
  // when the world size changed); throws ll::Error naming the mismatch. The params themselves
  // are not touched: load them from the checkpoint's trainable parameters (the next step's
  // all-gather makes them equal to the shards anyway).
  void import_shard(const OptimizerShard& shard);

 private:
  // Starts the reduction of the params flagged in `start` and not yet started, one bucket per
  // contiguous run of the flat vector.
  void start_buckets(const std::vector<bool>& start, const std::string& context);

  Backend& backend_;
  Communicator& communicator_;
  std::vector<TrainableParam>& params_;
  ShardLayout layout_;
  std::unique_ptr<ShardTransport> transport_;
  std::vector<ShardPiece> pieces_;  // this rank's shard as parts of tensors
  std::vector<bool> started_;       // [tensor_count] reduction started this step
  OwnedTensor flat_grad_;           // [T] this rank's gradients, params order (their storage)
  OwnedTensor flat_value_;          // [T] the gathered master weights
  OwnedTensor grad_shard_;          // [shard] mean over ranks of this rank's slice
  OwnedTensor master_shard_;        // [shard] fp32 master weights
  OwnedTensor exp_avg_shard_;       // [shard]
  OwnedTensor exp_avg_sq_shard_;    // [shard]
};

// Rank `new_rank`'s shard of layout `to`, assembled from all the shards of layout `from`
// (shards[r] written by rank r of from.world_size() ranks), following reshard_pieces. Throws
// ll::Error when a shard is missing, out of order or of the wrong size (a damaged or mixed
// checkpoint), or when the layouts describe different tensors.
OptimizerShard reshard_optimizer_state(const ShardLayout& from,
                                       std::span<const OptimizerShard> shards,
                                       const ShardLayout& to, int new_rank);

// The full state [T] rebuilt from all the shards of `from`: the one shard of a world of one.
OptimizerShard full_optimizer_state(const ShardLayout& from,
                                    std::span<const OptimizerShard> shards);

// A flat vector [T] cut into its tensors, params order (for per-tensor checkpoint files).
std::vector<std::vector<float>> split_by_tensor(const ShardLayout& layout,
                                                std::span<const float> flat);

}  // namespace ll::dist
