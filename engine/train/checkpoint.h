#pragma once
// Training checkpoints. A checkpoint is a directory <out>/checkpoint-<step, 8 digits>/ holding
//   adapter_model.safetensors, adapter_config.json, trainable_params.safetensors
//                              (model/formats/adapter_io.h: the parameters, fp32 master values)
//   optimizer_state.safetensors  AdamW moments "exp_avg.<name>" / "exp_avg_sq.<name>" for
//                              every trained tensor (name as in the adapter files), fp32
//   trainer_state.json         format "ll-train-state" version 1: step, loader position,
//                              seed, tokens seen, model fingerprint, run options, ...
// It is built in <out>/.checkpoint-<step>.tmp-<pid>/, every file flushed, then the directory
// is renamed to its final name and <out> is fsynced: a run killed at any moment leaves every
// earlier checkpoint intact, and a directory named checkpoint-* is always complete.
//
// Data-parallel runs (W > 1 ranks, engine/parallel/sharded_optimizer.h) write a sharded checkpoint
// instead of optimizer_state.safetensors: every rank writes its optimizer shard
//   optimizer_shard-<rank>-of-<W>.safetensors  "master", "exp_avg", "exp_avg_sq": [shard] fp32
//                              (metadata format "ll-optimizer-shard" version 1, rank, world_size)
// rank 0 the adapter files and trainer_state.json (version 2: adds "world_size"), and, after a
// barrier has seen every shard on disk, checkpoint_manifest.json ("ll-checkpoint-manifest"
// version 1: step, world size, every file and its size) last: the manifest commits the step.
// The directory is built under rank 0's temporary name and renamed like a single-process one
// (the ranks share the output directory's filesystem). A world of one writes today's format
// (version 1, full moments), which is also "a world of one" for any reader: either kind
// resumes under any world size (the trainer re-shards, engine/parallel/shard_layout.h).
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "data/window_loader.h"
#include "engine/parallel/communicator.h"
#include "engine/parallel/sharded_optimizer.h"
#include "model/formats/adapter_io.h"

namespace ll {

struct TrainerState {
  int64_t step = 0;                  // optimizer steps completed
  LoaderPosition loader;             // the next window to read
  uint64_t seed = 0;
  int64_t tokens_seen = 0;           // labelled tokens trained on so far
  std::string model_fingerprint;     // see model_fingerprint() in the trainer; must match on resume
  std::string run_options_json;      // the resolved options of the run that wrote it (information)
  int world_size = 1;                // ranks of the run that wrote it (1 before data parallelism)
  // The attention family it trained with (resolved --attention-kernel; "auto" on the CPU
  // backend; "" in checkpoints from before it was recorded). Information: a resume may change it.
  std::string attention_kernel;
};

struct OptimizerMoments {
  std::map<std::string, HostTensor> exp_avg;     // by parameter name
  std::map<std::string, HostTensor> exp_avg_sq;  // by parameter name
};

struct Checkpoint {
  AdapterDir adapter;  // the trained parameters
  OptimizerMoments moments;  // a world of one: full moments by parameter name
  // A sharded checkpoint (state.world_size > 1), as read: every rank's shard, rank order. Their
  // sizes add up to the trained parameters' element count; moments is empty then.
  std::vector<dist::OptimizerShard> shards;
  TrainerState state;
};

// Writes checkpoint-<state.step> under out_dir (created if missing), then deletes the oldest
// checkpoint-* directories so that at most keep_last remain (keep_last <= 0 keeps all).
// Returns the checkpoint's path. Throws ll::Error on I/O failure (the previous checkpoints
// stay as they were).
std::string write_checkpoint(const std::string& out_dir, const Checkpoint& checkpoint,
                             int keep_last);

// The sharded form, called by every rank of a world of W > 1 with the same step. Rank 0's
// `checkpoint` supplies the adapter and the state (other ranks' only state.step; moments and
// shards are ignored); `shard` is this rank's optimizer state. Returns the checkpoint's path
// on every rank once it is committed. An error on any rank throws there; the others then wait
// in a collective until the run is aborted (the caller ends the world, engine/parallel/communicator.h).
std::string write_sharded_checkpoint(const std::string& out_dir, const Checkpoint& checkpoint,
                                     const dist::OptimizerShard& shard,
                                     dist::Communicator& communicator, int keep_last);

// Reads and validates a checkpoint directory: every file present and well-formed, a moment
// pair for every parameter with the parameter's shape, format and version known. Throws
// ll::Error naming the file and the fault.
Checkpoint read_checkpoint(const std::string& checkpoint_dir);

// The complete checkpoint with the highest step under out_dir, or nothing. Leftover
// .checkpoint-*.tmp-* directories (from a killed run) are ignored, and so is a directory that
// is not committed (no trainer state, or a sharded one without its manifest).
std::optional<std::string> latest_checkpoint(const std::string& out_dir);

}  // namespace ll
