#pragma once
// What a training run stands on before its first step: the backend (one GPU per rank of a
// node), the data (read first: bad data fails fast), the base weights and the model with
// LoRA+, the memory plan reserved before the weights go to the device, the forward spec
// (position interpolation, S2-Attn group) and, with --resume, the checkpoint to continue,
// read and checked against this run (base model, options, world size x --grad-accum).
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "engine/parallel/communicator.h"
#include "engine/train/checkpoint.h"
#include "engine/train/sequence_source.h"
#include "engine/train/train_options.h"
#include "kernels/backend.h"
#include "model/llama_config.h"
#include "model/llama_model.h"
#include "model/position_interpolation.h"

namespace ll {

struct TrainingSetup {
  int world = 1;  // ranks
  int rank = 0;
  bool lead = true;           // rank 0: prints and writes what the run has once
  bool sharded_step = false;  // the data-parallel step (uses_sharded_step)
  std::chrono::steady_clock::time_point t_start;
  std::unique_ptr<Backend> backend;
  LlamaConfig config;
  std::string fingerprint;    // model_fingerprint of the base weights
  int64_t planned_bytes = 0;  // the memory plan (this rank's, for the sharded step)
  std::string schedule_line;  // the activation offload and tiles chosen, and why
  ForwardSpec spec;           // group_size: the one at -ctx (SFT examples get their own)
  std::unique_ptr<SequenceSource> source;
  std::string data_line;              // the setup's description of the data
  std::unique_ptr<LlamaModel> model;  // on *backend; --init-adapter loaded
  std::optional<Checkpoint> resume;   // the checkpoint this run continues, read and checked
  std::string resumed_from;           // its directory ("" for a new run)
  std::string resumed_attention;      // the attention family that checkpoint recorded
};

// Sets up the run `options` (validated) describes as rank `communicator.rank()`: every rank
// must pass the same options and see the same model and data (checked: a rank that differs is
// named). Throws ll::Error for bad input, a run that does not fit the device or a checkpoint
// this run cannot continue.
TrainingSetup set_up_training(const TrainOptions& options, dist::Communicator& communicator);

// The RoPE scaling the run applies: model/position_interpolation.h's rope_for_context for -ctx
// with --rope-scaling (auto: the model's own type, linear without one) and --rope-factor (0:
// from -ctx). Throws ll::Error for dynamic NTK beyond max_position_embeddings.
RopeChoice training_rope(const TrainOptions& options, const LlamaConfig& config);

// --dry-run: the memory plan of `options` for `world` ranks on the backend a real run would
// take here, with the activation offload and tiles chosen for --device-memory and
// --host-memory (no limit without them), printed to stdout (only config.json is read).
// Returns whether it fits.
bool print_memory_plan(const TrainOptions& options, int world);

}  // namespace ll
