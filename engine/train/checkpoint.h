#pragma once
// Training checkpoints: <out>/checkpoint-<step, 8 digits>/ with the adapter files (fp32 master
// values), the AdamW moments (optimizer_state.safetensors, or one optimizer_shard-<r>-of-<W>
// per rank plus checkpoint_manifest.json, written last, in a data-parallel run) and
// trainer_state.json. Built in a temporary directory, every file flushed, then renamed: a run
// killed at any moment leaves every earlier checkpoint intact, and a checkpoint-* directory is
// always complete. Either kind resumes under any world size. Files and fields:
// docs/formats/checkpoint.md; writing and resuming: docs/subsystems/checkpoints.md.
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
  int64_t step = 0;       // optimizer steps completed
  LoaderPosition loader;  // the next window to read
  uint64_t seed = 0;
  int64_t tokens_seen = 0;        // labelled tokens trained on so far
  std::string model_fingerprint;  // see model_fingerprint() in the trainer; must match on resume
  std::string run_options_json;   // the resolved options of the run that wrote it (information)
  int world_size = 1;             // ranks of the run that wrote it (1 before data parallelism)
  // The attention family it trained with (resolved --attention-kernel; "auto" on the CPU
  // backend; "" in checkpoints from before it was recorded). Information: a resume may change it.
  std::string attention_kernel;
};

struct OptimizerMoments {
  std::map<std::string, HostTensor> exp_avg;     // by parameter name
  std::map<std::string, HostTensor> exp_avg_sq;  // by parameter name
};

struct Checkpoint {
  AdapterDir adapter;        // the trained parameters
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
// in a collective until the run is aborted (the caller ends the world,
// engine/parallel/communicator.h).
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
