#pragma once
// The memory a training run needs, computed from the config alone (no weights, no device):
// what `train_longlora --dry-run` prints. It mirrors the allocations of LlamaModel's
// constructor and forward_backward (tests/model/test_memory_plan.cpp checks it against the
// bytes the CPU backend actually allocates), so the plan is the run's real peak: the
// parameters plus the largest of the step's phases (forward, classifier, final norm backward,
// block backward), each counted from what is alive in it. Offloaded block inputs are counted
// apart, as host (pinned) memory.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "kernels/backend_traits.h"
#include "model/llama_config.h"
#include "model/lora_config.h"

namespace ll {

struct MemoryPlanInput {
  LlamaConfig config;
  std::optional<LoraConfig> lora;
  TrainableSet trainable = TrainableSet::lora_plus();
  int64_t seq_len = 0;              // N
  int64_t classifier_chunk = 2048;  // tokens per LM-head chunk
  // The backend's activation dtype, fixed workspace and attention accumulators:
  // backend_traits(kind, attention kernel) or an existing backend's traits().
  BackendTraits backend = backend_traits(BackendKind::Cpu);
  // Rows per tile of the row-wise stages (ForwardSpec::tile_tokens; 0 or >= N: whole) and the
  // block inputs kept in host memory (ForwardSpec::offloaded_layers, at most L - 1).
  int64_t tile_tokens = 0;
  int64_t offloaded_layers = 0;
};

struct MemoryItem {
  std::string name;
  int64_t bytes = 0;
  std::string detail;  // what it is made of, e.g. "32 x [100000, 4096] bf16"
};

// One phase of a training step and the step's bytes alive at its peak.
struct MemoryPhase {
  std::string name;
  int64_t bytes = 0;
  std::vector<MemoryItem> items;
};

struct MemoryPlan {
  // The parameters' items, then the step's at its peak phase: in the order printed.
  std::vector<MemoryItem> items;
  std::vector<MemoryPhase> phases;  // forward, classifier, final norm backward, backward
  std::string peak_phase;           // the phase with the most bytes
  int64_t parameter_bytes = 0;      // weights, trained values, master, grads, moments
  int64_t step_bytes = 0;           // the peak phase's bytes on top of the parameters
  int64_t host_bytes = 0;           // offloaded block inputs (pinned host memory on a GPU)
  int64_t tile_tokens = 0;          // rows per tile (N: whole)
  int64_t offloaded_layers = 0;
  int64_t total() const { return parameter_bytes + step_bytes; }  // device memory
};

MemoryPlan plan_training_memory(const MemoryPlanInput& input);

// One rank's memory in the data-parallel step (engine/parallel/sharded_optimizer.h) with `world`
// ranks, from the single-process plan: no rank holds the full AdamW moments, each keeps fp32
// master, exp_avg, exp_avg_sq and gradient shards and a flat gathered-parameter vector of all
// trained elements (the gradients stay where the plan has them: the flat gradient buffer is their
// storage); on GPUs (`nccl_padding`) NCCL's padded all-gather buffers add T + T/W fp32.
struct RankFootprint {
  int64_t trained = 0;       // trained elements T
  int64_t shard = 0;         // the largest shard's elements, ceil(T / W)
  int64_t full_moments = 0;  // bytes of the moments no rank holds
  int64_t shard_bytes = 0;   // bytes of the four fp32 shards
  int64_t flat_bytes = 0;    // bytes of the gathered vector (and NCCL's padded buffers)
  int64_t total = 0;         // the rank's plan
};
RankFootprint sharded_rank_footprint(const MemoryPlan& plan, int world, bool nccl_padding);

// A table for people: one line per item, sizes in MiB/GiB, the total, each phase of the step
// and the host memory.
std::string format_memory_plan(const MemoryPlan& plan);

// 1536 -> "1.50 KiB", 7.3e9 -> "6.80 GiB".
std::string format_bytes(int64_t bytes);

}  // namespace ll
