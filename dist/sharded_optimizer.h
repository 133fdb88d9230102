#pragma once
// The data-parallel optimizer step, ZeRO-1/2 style: gradients are reduce-scattered (averaged)
// into per-rank shards of the flat trainable vector (dist/shard_layout.h), each rank runs AdamW
// on its shard only, keeping that shard's fp32 master weights and moments, and the updated
// shards are all-gathered back into every rank's parameters.
//
// Step, on every rank with the same arguments:
//   1. pack: every parameter's gradient into the flat buffer [T] (params order).
//   2. reduce-scatter (sum) into this rank's gradient shard, divided by W: the mean over ranks.
//   3. clip norm: each rank's sum of squares of its shard (per piece, in flat order), summed
//      over ranks by an all-reduce; sqrt; coefficient from optim/grad_clip.h.
//   4. AdamW (backend.adamw_step) on the shard with that coefficient as grad_scale. Its
//      `param` output is the master shard itself (fp32 on the CPU): MPI forbids gathering from
//      a slice of the receive buffer, so the flat value buffer cannot be the source.
//   5. all-gather the master shards into the flat value buffer [T] and unpack it into every
//      parameter's value and master, so the full parameters stay identical on every rank
//      (export_adapter and checkpoint code read them as before).
//
// Loss scaling composes as follows: each rank scales its micro-batch losses by
// 1 / (k * labels) with its own accumulation k, as a single process does, so its gradients are
// the mean over its k micro-batches; step 2's mean over W ranks then gives
// sum over all W*k micro-batches of g / (W k labels), the gradient a single process with
// accumulation W*k computes with its loss scale 1 / (W k labels). The division by W happens
// once, after the fp32 sum over ranks (correctly rounded x / W), not in the loss scale, so a
// rank's local gradients mean the same whatever the world size. With rank_windows.h's data
// order, W ranks x k equals one process x W*k up to fp32 summation order (relative 1e-7).
// The norm returned is that of the mean gradient, i.e. what the single process would log.
//
// World of one (SingleProcessCommunicator): the pieces are whole tensors in params order, so
// the norm's sum and the update are the same operations as engine/optimizer_step.h's
// gradient_norm + adamw_update_all, bit for bit.
//
// Restriction: the Communicator takes host pointers, so this path is for backends whose
// tensors live in host memory: the CPU backend (checked at construction). On GPUs the same
// steps will run over NCCL on device buffers (not built yet).
//
// State: the params' exp_avg / exp_avg_sq tensors are read once, at construction, to seed the
// shards (a model fresh from a single-process checkpoint carries its moments over), and are
// neither used nor updated afterwards; checkpoints take the moments from export_shard(). The
// params' grads are left as this rank's local gradients. Memory: the model still allocates
// full exp_avg / exp_avg_sq per parameter on every rank, which the sharding is meant to save;
// dropping them when a ShardedOptimizer owns the state is a follow-up (a model/ change).
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "dist/communicator.h"
#include "dist/shard_layout.h"
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
  // must have F32 master, grad, exp_avg and exp_avg_sq tensors of its shape. Kept by reference:
  // the vector must outlive this object and keep its tensors. Construct after the params hold
  // their starting values (adapter loaded, checkpoint restored). Throws ll::Error for a backend
  // outside host memory or a parameter without training state.
  ShardedOptimizer(Backend& backend, Communicator& communicator,
                   std::vector<TrainableParam>& params);

  const ShardLayout& layout() const { return layout_; }
  int rank() const { return communicator_.rank(); }
  int world_size() const { return communicator_.world_size(); }

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
  Backend& backend_;
  Communicator& communicator_;
  std::vector<TrainableParam>& params_;
  ShardLayout layout_;
  std::vector<int64_t> shard_sizes_;  // [W], what the collectives take
  std::vector<ShardPiece> pieces_;    // this rank's shard as parts of tensors
  OwnedTensor flat_grad_;             // [T] this rank's gradients, params order
  OwnedTensor flat_value_;            // [T] the gathered master weights
  OwnedTensor grad_shard_;            // [shard] mean over ranks of this rank's slice
  OwnedTensor master_shard_;          // [shard] fp32 master weights
  OwnedTensor exp_avg_shard_;         // [shard]
  OwnedTensor exp_avg_sq_shard_;      // [shard]
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
