#pragma once
// Training checkpoints. A checkpoint is a directory <out>/checkpoint-<step, 8 digits>/ holding
//   adapter_model.safetensors, adapter_config.json, trainable_params.safetensors
//                              (model/adapter_io.h: the parameters, fp32 master values)
//   optimizer_state.safetensors  AdamW moments "exp_avg.<name>" / "exp_avg_sq.<name>" for
//                              every trained tensor (name as in the adapter files), fp32
//   trainer_state.json         format "ll-train-state" version 1: step, loader position,
//                              seed, tokens seen, model fingerprint, run options, ...
// It is built in <out>/.checkpoint-<step>.tmp-<pid>/, every file flushed, then the directory
// is renamed to its final name and <out> is fsynced: a run killed at any moment leaves every
// earlier checkpoint intact, and a directory named checkpoint-* is always complete.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "data/window_loader.h"
#include "model/adapter_io.h"

namespace ll {

struct TrainerState {
  int64_t step = 0;                  // optimizer steps completed
  LoaderPosition loader;             // the next window to read
  uint64_t seed = 0;
  int64_t tokens_seen = 0;           // labelled tokens trained on so far
  std::string model_fingerprint;     // see model_fingerprint() in the trainer; must match on resume
  std::string run_options_json;      // the resolved options of the run that wrote it (information)
};

struct OptimizerMoments {
  std::map<std::string, HostTensor> exp_avg;     // by parameter name
  std::map<std::string, HostTensor> exp_avg_sq;  // by parameter name
};

struct Checkpoint {
  AdapterDir adapter;  // the trained parameters
  OptimizerMoments moments;
  TrainerState state;
};

// Writes checkpoint-<state.step> under out_dir (created if missing), then deletes the oldest
// checkpoint-* directories so that at most keep_last remain (keep_last <= 0 keeps all).
// Returns the checkpoint's path. Throws ll::Error on I/O failure (the previous checkpoints
// stay as they were).
std::string write_checkpoint(const std::string& out_dir, const Checkpoint& checkpoint,
                             int keep_last);

// Reads and validates a checkpoint directory: every file present and well-formed, a moment
// pair for every parameter with the parameter's shape, format and version known. Throws
// ll::Error naming the file and the fault.
Checkpoint read_checkpoint(const std::string& checkpoint_dir);

// The complete checkpoint with the highest step under out_dir, or nothing. Leftover
// .checkpoint-*.tmp-* directories (from a killed run) are ignored.
std::optional<std::string> latest_checkpoint(const std::string& out_dir);

}  // namespace ll
