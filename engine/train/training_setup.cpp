#include "engine/train/training_setup.h"

#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/byte_size.h"
#include "common/error.h"
#include "engine/parallel/run_agreement.h"
#include "engine/train/step_strategy.h"
#include "kernels/attention_kernel.h"
#include "kernels/attention_pattern.h"
#include "kernels/backend_traits.h"
#include "kernels/make_backend.h"
#include "model/activation_schedule.h"
#include "model/formats/tensor_source.h"
#include "model/llama_weights.h"
#include "model/memory_plan.h"
#include "model/model_fingerprint.h"
#include "model/position_interpolation.h"

namespace ll {
namespace {

namespace fs = std::filesystem;

// Options that change what a resumed run computes; a checkpoint written with other values
// cannot continue this run. "sft": an SFT run never continues a pretraining checkpoint (nor the
// reverse, nor another SFT file).
const char* const kResumeKeys[] = {"ctx",         "grad-accum", "seed",         "shuffle",
                                   "lora-rank",   "lora-alpha", "lora-targets", "trainable",
                                   "full-attn",   "attn-mode",  "group-ratio",  "data-format",
                                   "rope-factor", "sft",        "rope-scaling", "chat-template"};

void check_resume_options(const std::string& saved_json, const std::string& current_json,
                          const std::string& checkpoint, int saved_world, int current_world) {
  nlohmann::json saved, current;
  try {
    saved = nlohmann::json::parse(saved_json);
    current = nlohmann::json::parse(current_json);
  } catch (const nlohmann::json::exception&) {
    return;  // an older or foreign checkpoint without options: nothing to compare
  }
  if (!saved.is_object()) return;
  // Checkpoints from before --sft existed are pretraining ones.
  if (!saved.contains("sft")) saved["sft"] = "";
  const bool saved_sft = saved["sft"] != "", current_sft = current.value("sft", "") != "";
  const auto kind = [](bool sft) {
    return sft ? "supervised fine-tuning (--sft)" : "training on token shards (--data)";
  };
  LL_CHECK(saved_sft == current_sft,
           "cannot resume from {}: it is a checkpoint of {}, this run is {}; use a new --out "
           "directory (with --init-adapter {} to start from its weights)",
           checkpoint, kind(saved_sft), kind(current_sft), checkpoint);
  for (const char* key : kResumeKeys) {
    if (current_sft && std::string_view(key) == "data-format") continue;  // unused by --sft
    if (!saved.contains(key) || !current.contains(key)) continue;
    if (std::string_view(key) == "grad-accum" && saved[key].is_number_integer() &&
        current[key].is_number_integer()) {
      // What a step computes is the global batch W x k: another split over ranks continues it.
      const int64_t saved_batch = saved[key].get<int64_t>() * saved_world;
      const int64_t current_batch = current[key].get<int64_t>() * current_world;
      LL_CHECK(saved_batch == current_batch,
               "cannot resume from {}: it was trained with {} sequences per step (--grad-accum {} "
               "on {} rank{}), this run has {} (--grad-accum {} on {} rank{}); keep ranks x "
               "--grad-accum the same, or use a new --out directory",
               checkpoint, saved_batch, saved[key].dump(), saved_world, saved_world == 1 ? "" : "s",
               current_batch, current[key].dump(), current_world, current_world == 1 ? "" : "s");
      continue;
    }
    LL_CHECK(saved[key] == current[key],
             "cannot resume from {}: it was trained with --{} {}, this run has --{} {} (use the "
             "same options, or a new --out directory to start a new run)",
             checkpoint, key, saved[key].dump(), key, current[key].dump());
  }
}

// The adapters the options ask for; none with --lora-rank 0 (full training).
std::optional<LoraConfig> lora_config_of(const TrainOptions& o) {
  if (o.lora_rank == 0) return std::nullopt;
  LoraConfig lora;
  lora.rank = o.lora_rank;
  lora.alpha = o.lora_alpha;
  lora.targets = parse_lora_targets(o.lora_targets);
  return lora;
}

LlamaConfig read_config_only(const std::string& model) {
  // A directory needs only config.json: plans for models whose weights are not here.
  if (fs::is_directory(model)) return llama_config_from_file(model + "/config.json");
  return open_model_files(model)->config;
}

// The memory plan of this run's options on a backend with these traits (CUDA: bf16 activations
// and frozen weights, fp32 master, gradients and moments, cuBLASLt workspace, the attention
// family's accumulators; CPU: fp32 everywhere), with the activation offload and token tiles
// chosen for `budget` (model/activation_schedule.h). `world` ranks of the data-parallel step
// (sharded) cost a rank's footprint.
ScheduleChoice schedule_of(const TrainOptions& o, const LlamaConfig& config,
                           const BackendTraits& backend, bool sharded, int world,
                           const MemoryBudget& budget) {
  // Before any plan or weights: a context Mistral's sliding window would restrict.
  check_sliding_window(config, o.ctx, fmt::format("-ctx {}", o.ctx));
  MemoryPlanInput in;
  in.config = config;
  in.lora = lora_config_of(o);
  in.trainable = parse_trainable(o.trainable);
  in.seq_len = o.ctx;
  in.classifier_chunk = o.classifier_chunk;
  in.backend = backend;
  ScheduleRequest request;
  request.offload = parse_offload_mode(o.offload_activations);
  request.tile_tokens = tile_tokens_of(o);
  const bool cuda = backend.kind == BackendKind::Cuda;
  request.offload_useful = cuda;  // the CPU backend's memory is the host's
  if (sharded) {
    request.device_cost = [world, cuda](const MemoryPlan& plan) {
      return sharded_rank_footprint(plan, world, cuda).total;
    };
  }
  return choose_activation_schedule(in, request, budget);
}

// --device-memory and --host-memory over what the machine says (a dry run: no limit but them).
MemoryBudget budget_of(const TrainOptions& o, const BackendMemory* device) {
  MemoryBudget b;
  if (!o.device_memory.empty()) {
    b.device_free = b.device_total = parse_byte_size(o.device_memory, "--device-memory");
  }
  if (device != nullptr) {
    if (device->device_total >= 0) {
      const int64_t free_now = device->device_total - device->device_used;
      if (b.device_free < 0 || free_now < b.device_free) {
        b.device_free = free_now;
        b.device_total = device->device_total;
      }
    } else if (b.device_free < 0) {
      b.device_free = host_memory_available();  // the CPU backend's memory is the host's
    }
  }
  if (!o.host_memory.empty()) {
    b.host_free = parse_byte_size(o.host_memory, "--host-memory");
  } else if (device != nullptr) {
    b.host_free = host_memory_available();
  }
  return b;
}

// The per-rank memory of the data-parallel step (model/memory_plan.h), for --dry-run.
std::string format_rank_footprint(const MemoryPlan& plan, int world, bool cuda) {
  const RankFootprint f = sharded_rank_footprint(plan, world, cuda);
  return fmt::format(
      "  data parallel {:>4} rank{} {:>10}   per rank: AdamW moments {} replaced by shards {} "
      "(fp32 master, exp_avg, exp_avg_sq, gradient: at most {} of {} elements), plus gathered "
      "parameters{} {}\n",
      world, world == 1 ? " " : "s", format_bytes(f.total), format_bytes(f.full_moments),
      format_bytes(f.shard_bytes), f.shard, f.trained, cuda ? " and NCCL's padded buffers" : "",
      format_bytes(f.flat_bytes));
}

// Names and sizes of the data files, for the ranks' agreement check: a rank that sees other
// files (another node's copy, a stale directory) must not train on them silently.
std::string describe_data_files(const TrainOptions& o) {
  std::string out;
  auto add = [&](const fs::path& path) {
    std::error_code ec;
    const auto size = fs::file_size(path, ec);
    out += fmt::format("{} {}\n", path.string(), ec ? -1 : int64_t(size));
  };
  std::vector<std::string> paths = o.data;
  if (!o.sft.empty()) paths.push_back(o.sft);
  for (const std::string& p : paths) {
    std::error_code ec;
    if (!fs::is_directory(p, ec)) {
      add(p);
      continue;
    }
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(p, ec))
      if (e.is_regular_file(ec)) files.push_back(e.path());
    std::sort(files.begin(), files.end());
    for (const fs::path& f : files) add(f);
  }
  return out;
}

// OpenMP threads per rank: the node's cores shared by its ranks, unless OMP_NUM_THREADS says.
void set_rank_threads(const dist::Communicator& communicator) {
  if (communicator.world_size() == 1 || std::getenv("OMP_NUM_THREADS") != nullptr) return;
  int local_ranks = communicator.world_size();
  if (const char* env = std::getenv("OMPI_COMM_WORLD_LOCAL_SIZE"))
    local_ranks = std::max(1, std::atoi(env));
  omp_set_num_threads(std::max(1, omp_get_num_procs() / local_ranks));
}

// Position interpolation and the attention pattern at -ctx.
ForwardSpec forward_spec_of(const TrainOptions& o, const LlamaConfig& config) {
  ForwardSpec spec;
  spec.rope = training_rope(o, config).rope;
  spec.classifier_chunk = o.classifier_chunk;
  if (o.full_attn) {
    spec.attn_mode = AttnMode::Dense;
    return spec;
  }
  spec.attn_mode = o.attn_mode == "s2-roll" ? AttnMode::S2Roll : AttnMode::S2;
  S2GroupInput s2;
  s2.ratio = o.group_ratio;
  s2.seq_len = o.ctx;
  s2.n_heads = config.num_attention_heads;
  check_s2_group(s2);
  spec.group_size = s2_group_size(o.ctx, o.group_ratio);
  return spec;
}

// Base model, and the data before the weights load: bad data (or SFT records) fail fast. Then
// the memory plan reserved, the spec, and the model with LoRA+.
void load_model_and_data(const TrainOptions& o, dist::Communicator& communicator,
                         TrainingSetup& s) {
  // The activation schedule for this device and host from the config alone, before any
  // weight file is opened: a run that cannot fit says so now, with the plan's numbers and what
  // would fit.
  const BackendMemory device = s.backend->memory();
  const ScheduleChoice schedule = schedule_of(o, read_config_only(o.model), s.backend->traits(),
                                              s.sharded_step, s.world, budget_of(o, &device));
  LL_CHECK(schedule.fits, "-ctx {} on this device: {}\nWhat would fit:\n{}", o.ctx,
           schedule.summary, schedule.advice);
  s.schedule_line = schedule.summary;
  auto files = open_model_files(o.model);
  s.source = make_sequence_source(o, files->config, s.data_line, s.lead);
  LlamaWeights weights = load_llama_weights(*files);
  files.reset();
  s.config = weights.config;
  s.fingerprint = model_fingerprint(weights);
  // Every rank must train the same model with the same options on the same data.
  dist::check_ranks_agree(
      communicator,
      dist::fnv1a_64(s.fingerprint + "\n" + train_options_json(o) + "\n" + describe_data_files(o)),
      "model, options and data (model fingerprint, every option, data file names and sizes)");
  // The whole run's memory, reserved before the weights go to the device.
  const bool cuda = s.backend->kind() == BackendKind::Cuda;
  const MemoryPlan& plan = schedule.plan;
  s.planned_bytes =
      s.sharded_step ? sharded_rank_footprint(plan, s.world, cuda).total : plan.total();
  s.backend->reserve(s.planned_bytes - s.backend->memory().in_use);

  s.spec = forward_spec_of(o, s.config);
  s.spec.tile_tokens = plan.tile_tokens;
  s.spec.offloaded_layers = plan.offloaded_layers;

  // Model with LoRA+.
  ModelSetup setup;
  setup.lora = lora_config_of(o);
  setup.trainable = parse_trainable(o.trainable);
  setup.seed = o.seed;
  setup.training = true;
  setup.optimizer_moments = !s.sharded_step;  // the sharded optimizer holds them, per rank
  s.model = std::make_unique<LlamaModel>(*s.backend, weights, setup);
  weights = LlamaWeights{};  // the backend holds its own copy now
  if (!o.init_adapter.empty()) s.model->load_adapter(read_adapter_dir(o.init_adapter));
}

// --resume: the checkpoint to continue (the latest in --out for "auto"), read and checked
// against this run; none for a new run, nor for "auto" where --out has none.
void read_resume_checkpoint(const TrainOptions& o, TrainingSetup& s) {
  if (o.resume.empty()) return;
  std::string dir = o.resume;
  if (o.resume == "auto") {
    const std::optional<std::string> latest = latest_checkpoint(o.out);
    dir = latest ? *latest : "";
    if (!latest && s.lead)
      fmt::print("resume         no checkpoint in {}: starting a new run\n", o.out);
  }
  if (dir.empty()) return;
  Checkpoint ck = read_checkpoint(dir);
  LL_CHECK(ck.state.model_fingerprint == s.fingerprint,
           "cannot resume from {}: it was trained on another base model (fingerprint {}, "
           "this model {})",
           dir, ck.state.model_fingerprint, s.fingerprint);
  check_resume_options(ck.state.run_options_json, train_options_json(o), dir, ck.state.world_size,
                       s.world);
  s.resumed_attention = ck.state.attention_kernel;
  s.resume = std::move(ck);
  s.resumed_from = dir;
}

}  // namespace

RopeChoice training_rope(const TrainOptions& o, const LlamaConfig& config) {
  std::optional<RopeType> type;
  if (o.rope_scaling != "auto") {
    type = rope_type_from_name(o.rope_scaling);
    LL_CHECK(
        type && (*type == RopeType::Linear || *type == RopeType::Yarn || *type == RopeType::Llama3),
        "--rope-scaling {} is not one of auto, linear, yarn, llama3", o.rope_scaling);
  }
  RopeChoice c = rope_for_context(config.rope_scaling, config.max_position_embeddings, o.ctx, type,
                                  o.rope_factor);
  // Dynamic NTK changes its frequencies with each call's length: a model trained with it at
  // one length would be evaluated with others. Within the model's context it is plain RoPE.
  LL_CHECK(c.rope.type != RopeType::Dynamic || o.ctx <= config.max_position_embeddings,
           "the model's RoPE scaling is dynamic NTK, which is not trained beyond "
           "max_position_embeddings ({}; -ctx {}); choose --rope-scaling linear, yarn or llama3",
           config.max_position_embeddings, o.ctx);
  return c;
}

TrainingSetup set_up_training(const TrainOptions& o, dist::Communicator& communicator) {
  TrainingSetup s;
  s.t_start = std::chrono::steady_clock::now();
  s.world = communicator.world_size();
  s.rank = communicator.rank();
  s.lead = s.rank == 0;
  set_rank_threads(communicator);
  // One GPU per rank of a node (its local rank); a world of one takes GPU 0.
  s.backend =
      make_backend(o.device, communicator.local_rank(), parse_attention_kernel(o.attention_kernel));
  s.sharded_step = uses_sharded_step(o, s.world);
  load_model_and_data(o, communicator, s);
  read_resume_checkpoint(o, s);
  return s;
}

bool print_memory_plan(const TrainOptions& o, int world) {
  const LlamaConfig config = read_config_only(o.model);
  // auto plans for the backend a real run would take on this machine.
  const BackendTraits traits =
      backend_traits(resolve_device(o.device), parse_attention_kernel(o.attention_kernel));
  const bool cuda = traits.kind == BackendKind::Cuda;
  const bool sharded = world > 1 || o.sharded_optimizer;
  const ScheduleChoice schedule =
      schedule_of(o, config, traits, sharded, std::max(world, 1), budget_of(o, nullptr));
  const MemoryPlan& plan = schedule.plan;
  fmt::print("memory plan    {} at -ctx {} on {} ({} layers, hidden {}, vocab {}; {})\n", o.model,
             o.ctx, backend_kind_name(traits.kind), config.num_hidden_layers, config.hidden_size,
             config.vocab_size,
             cuda ? "bf16 activations and frozen weights, fp32 master/gradients/moments, "
                    "attention " +
                        std::string(attention_kernel_name(traits.attention_kernel))
                  : std::string("fp32 everywhere"));
  fmt::print("{}", format_memory_plan(plan));
  if (sharded) fmt::print("{}", format_rank_footprint(plan, world, cuda));
  fmt::print("activations    {}\n", schedule.summary);
  if (!schedule.fits) fmt::print("what would fit\n{}", schedule.advice);
  // What the run would apply: the plan does not depend on it, the user's choice does.
  const RopeChoice rope = training_rope(o, config);
  fmt::print("rope           {} ({})\n", describe_rope_scaling(rope.rope), rope.source);
  return schedule.fits;
}

}  // namespace ll
