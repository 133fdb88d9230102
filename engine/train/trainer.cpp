#include "engine/train/trainer.h"

#include <omp.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "data/sft_dataset.h"
#include "data/sft_loader.h"
#include "data/tokenizer.h"
#include "data/tokenizer_path.h"
#include "data/window_loader.h"
#include "engine/parallel/rank_windows.h"
#include "engine/parallel/run_agreement.h"
#include "engine/parallel/shard_layout.h"
#include "engine/parallel/sharded_optimizer.h"
#include "engine/train/checkpoint.h"
#include "engine/train/attention_record.h"
#include "engine/train/metrics_log.h"
#include "engine/train/optimizer_step.h"
#include "engine/train/progress.h"
#include "kernels/make_backend.h"
#include "model/formats/adapter_io.h"
#include "model/llama_model.h"
#include "model/llama_weights.h"
#include "model/memory_plan.h"
#include "model/model_fingerprint.h"
#include "model/position_interpolation.h"
#include "model/formats/tensor_source.h"
#include "optim/adamw.h"
#include "optim/grad_clip.h"
#include "optim/lr_schedule.h"

namespace ll {
namespace {

namespace fs = std::filesystem;

// Options that change what a resumed run computes; a checkpoint written with other values
// cannot continue this run. "sft": an SFT run never continues a pretraining checkpoint (nor the
// reverse, nor another SFT file).
const char* const kResumeKeys[] = {"ctx",        "grad-accum",   "seed",      "shuffle",
                                   "lora-rank",  "lora-alpha",   "lora-targets", "trainable",
                                   "full-attn",  "attn-mode",    "group-ratio", "data-format",
                                   "rope-factor", "sft"};

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
               checkpoint, saved_batch, saved[key].dump(), saved_world,
               saved_world == 1 ? "" : "s", current_batch, current[key].dump(), current_world,
               current_world == 1 ? "" : "s");
      continue;
    }
    LL_CHECK(saved[key] == current[key],
             "cannot resume from {}: it was trained with --{} {}, this run has --{} {} (use the "
             "same options, or a new --out directory to start a new run)",
             checkpoint, key, saved[key].dump(), key, current[key].dump());
  }
}

std::vector<int64_t> param_sizes(const std::vector<TrainableParam>& params) {
  std::vector<int64_t> sizes;  // [tensor count], params order: the flat layout's tensors
  for (const TrainableParam& p : params) sizes.push_back(p.master->numel());
  return sizes;
}

// The checkpoint of a step. Without a sharded optimizer the AdamW moments are the model's; a
// sharded optimizer in a world of one hands its one shard (the full state), which is written
// the same way; with world_size > 1 the moments are left out (every rank writes its shard).
Checkpoint make_checkpoint(const LlamaModel& model, const TrainOptions& o, int64_t step,
                           const LoaderPosition& loader, int64_t tokens_seen,
                           const std::string& fingerprint, int world_size = 1,
                           const dist::ShardedOptimizer* sharded = nullptr) {
  Checkpoint ck;
  ck.adapter = model.export_adapter(o.model);
  Backend& backend = model.backend();
  if (world_size == 1) {
    std::vector<std::vector<float>> exp_avg, exp_avg_sq;  // [tensor][size], params order
    if (sharded != nullptr) {
      const dist::OptimizerShard full = sharded->export_shard();
      exp_avg = dist::split_by_tensor(sharded->layout(), full.exp_avg);
      exp_avg_sq = dist::split_by_tensor(sharded->layout(), full.exp_avg_sq);
    }
    for (size_t t = 0; t < model.params().size(); ++t) {
      const TrainableParam& p = model.params()[t];
      HostTensor m{p.shape, {}}, v{p.shape, {}};
      if (sharded != nullptr) {
        m.values = std::move(exp_avg[t]);
        v.values = std::move(exp_avg_sq[t]);
      } else {
        m.values.resize(size_t(p.exp_avg->numel()));
        v.values.resize(size_t(p.exp_avg_sq->numel()));
        backend.download_f32(m.values.data(), *p.exp_avg);
        backend.download_f32(v.values.data(), *p.exp_avg_sq);
      }
      ck.moments.exp_avg.emplace(p.name, std::move(m));
      ck.moments.exp_avg_sq.emplace(p.name, std::move(v));
    }
  }
  ck.state.step = step;
  ck.state.loader = loader;
  ck.state.seed = o.seed;
  ck.state.tokens_seen = tokens_seen;
  ck.state.model_fingerprint = fingerprint;
  ck.state.run_options_json = train_options_json(o);
  ck.state.world_size = world_size;
  ck.state.attention_kernel = attention_kernel_name(backend.traits().attention_kernel);
  return ck;
}

// A single-process checkpoint's moments of one parameter: exp_avg and exp_avg_sq.
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

void restore_checkpoint(LlamaModel& model, const Checkpoint& ck) {
  model.load_adapter(ck.adapter);
  Backend& backend = model.backend();
  for (TrainableParam& p : model.params()) {
    const auto [m, v] = checkpoint_moments(ck, p);
    backend.upload_f32(*p.exp_avg, m->data());
    backend.upload_f32(*p.exp_avg_sq, v->data());
  }
}

// A sharded checkpoint resumed by one process: its shards put together are the full moments.
void restore_sharded_into_model(LlamaModel& model, const Checkpoint& ck) {
  model.load_adapter(ck.adapter);
  const dist::ShardLayout from(param_sizes(model.params()), ck.state.world_size);
  const dist::OptimizerShard full = dist::full_optimizer_state(from, ck.shards);
  const auto exp_avg = dist::split_by_tensor(from, full.exp_avg);
  const auto exp_avg_sq = dist::split_by_tensor(from, full.exp_avg_sq);
  Backend& backend = model.backend();
  for (size_t t = 0; t < model.params().size(); ++t) {
    TrainableParam& p = model.params()[t];
    backend.upload_f32(*p.exp_avg, exp_avg[t].data());
    backend.upload_f32(*p.exp_avg_sq, exp_avg_sq[t].data());
  }
}

// A checkpoint's optimizer state as rank `rank`'s shard of `to`, for a sharded optimizer: the
// checkpoint's shards re-sharded, or its full moments (a single-process checkpoint) cut up. The
// master weights are the model's (the checkpoint's adapter, loaded before).
dist::OptimizerShard checkpoint_shard(const LlamaModel& model, const Checkpoint& ck,
                                      const dist::ShardLayout& to, int rank) {
  const std::vector<int64_t> sizes = param_sizes(model.params());
  if (!ck.shards.empty())
    return dist::reshard_optimizer_state(dist::ShardLayout(sizes, ck.state.world_size), ck.shards,
                                         to, rank);
  dist::OptimizerShard full;  // the one shard of a world of one
  Backend& backend = model.backend();
  for (const TrainableParam& p : model.params()) {
    const auto [m, v] = checkpoint_moments(ck, p);
    std::vector<float> master(size_t(p.master->numel()));
    backend.download_f32(master.data(), *p.master);
    full.master.insert(full.master.end(), master.begin(), master.end());
    full.exp_avg.insert(full.exp_avg.end(), m->begin(), m->end());
    full.exp_avg_sq.insert(full.exp_avg_sq.end(), v->begin(), v->end());
  }
  const dist::OptimizerShard one[] = {std::move(full)};
  return dist::reshard_optimizer_state(dist::ShardLayout(sizes, 1), one, to, rank);
}

// A collective of the data-parallel step that failed during the backward (its message already
// names the rank, the collective and the step).
struct CollectiveFailure : Error {
  using Error::Error;
};

// One micro-batch: a sequence and what each of its positions is trained to predict.
struct TrainingSequence {
  std::vector<int32_t> tokens;   // [N]
  std::vector<int32_t> targets;  // [N] next-token target, -1 = no label
  int64_t labelled = 0;          // targets >= 0
};

// Where micro-batches come from: windows of token shards (--data) or SFT examples (--sft). The
// training loop is written once over this; the position is what checkpoints save.
class SequenceSource {
 public:
  virtual ~SequenceSource() = default;
  virtual void next(TrainingSequence& seq) = 0;
  virtual LoaderPosition position() const = 0;
  virtual void seek(const LoaderPosition& position) = 0;
  virtual const char* unit() const = 0;  // what one micro-batch is: "windows", "examples"
  virtual int64_t per_epoch() const = 0;  // micro-batches in one pass over the data
};

// Windows of -ctx tokens; every position but the last is labelled.
class WindowSource final : public SequenceSource {
 public:
  explicit WindowSource(WindowLoader loader) : loader_(std::move(loader)) {}
  void next(TrainingSequence& seq) override {
    seq.tokens = loader_.next();
    const int64_t n = int64_t(seq.tokens.size());
    seq.targets.resize(size_t(n));
    for (int64_t t = 0; t + 1 < n; ++t) seq.targets[size_t(t)] = seq.tokens[size_t(t + 1)];
    seq.targets[size_t(n - 1)] = -1;
    seq.labelled = n - 1;
  }
  LoaderPosition position() const override { return loader_.position(); }
  void seek(const LoaderPosition& position) override { loader_.seek(position); }
  const char* unit() const override { return "windows"; }
  int64_t per_epoch() const override { return loader_.windows_per_epoch(); }

 private:
  WindowLoader loader_;
};

// One SFT example per micro-batch (per-device batch 1, as the paper), at its own length: with
// causal attention and one sequence, right padding to a common length would change no logit
// and no loss, so there is none. S2-Attn segments are those of this one example (group size
// from its length), so they never cross example boundaries.
class SftSource final : public SequenceSource {
 public:
  explicit SftSource(SftLoader loader) : loader_(std::move(loader)) {}
  void next(TrainingSequence& seq) override {
    const SftExample& ex = loader_.next();
    seq.tokens = ex.tokens;
    seq.targets = sft_targets(ex);
    seq.labelled = ex.labelled();
  }
  LoaderPosition position() const override { return loader_.position(); }
  void seek(const LoaderPosition& position) override { loader_.seek(position); }
  const char* unit() const override { return "examples"; }
  int64_t per_epoch() const override { return loader_.examples_per_epoch(); }

 private:
  SftLoader loader_;
};

// --sft: reads and tokenizes the records, prints the warnings about truncated and skipped ones
// and returns the source with the setup's data line.
std::unique_ptr<SequenceSource> make_sft_source(const TrainOptions& o, const LlamaConfig& config,
                                                std::string& data_line, bool lead) {
  const std::string tokenizer_path = find_tokenizer_model(o.model, o.tokenizer);
  const Tokenizer tokenizer(tokenizer_path);
  LL_CHECK(tokenizer.vocab_size() <= config.vocab_size,
           "{}: the tokenizer has {} pieces but the model {} has vocab_size {}; pass the base "
           "model's own tokenizer.model (--tokenizer)",
           tokenizer_path, tokenizer.vocab_size(), o.model, config.vocab_size);
  SftDataset dataset = build_sft_dataset(read_sft_records(o.sft), tokenizer, o.ctx, o.sft);
  const SftDatasetSummary sum = summarize_sft_dataset(dataset);
  if (dataset.truncated > 0 && lead)
    fmt::print(stderr, "warning: {} of {} records are longer than -ctx {} and were truncated\n",
               dataset.truncated, dataset.records, o.ctx);
  if (dataset.skipped_truncated > 0 && lead)
    fmt::print(stderr,
               "warning: {} of {} records were skipped: their prompt alone fills -ctx {} "
               "tokens, so no answer token is left to train on\n",
               dataset.skipped_truncated, dataset.records, o.ctx);
  if (dataset.skipped_unlabelled > 0 && lead)
    fmt::print(stderr, "warning: {} of {} records were skipped: they have no answer token\n",
               dataset.skipped_unlabelled, dataset.records);
  std::vector<std::string> notes;
  if (dataset.skipped_truncated > 0)
    notes.push_back(fmt::format("{} skipped: prompt of -ctx tokens or more",
                                dataset.skipped_truncated));
  if (dataset.skipped_unlabelled > 0)
    notes.push_back(fmt::format("{} skipped: no answer token", dataset.skipped_unlabelled));
  if (dataset.truncated > 0)
    notes.push_back(fmt::format("{} truncated to -ctx", dataset.truncated));
  std::string noted;
  for (const std::string& n : notes) noted += (noted.empty() ? " (" : "; ") + n;
  if (!noted.empty()) noted += ")";
  data_line = fmt::format(
      "sft {}: {} records{}, {} examples per epoch, {} tokens of which {} labelled, lengths "
      "min/median/max {}/{}/{}, tokenizer {}, shuffle {}",
      o.sft, dataset.records, noted, dataset.examples.size(), sum.tokens, sum.labelled_tokens,
      sum.min_len, sum.median_len, sum.max_len, tokenizer_path, o.shuffle);
  return std::make_unique<SftSource>(SftLoader(std::move(dataset), o.shuffle == "on", o.seed));
}

std::unique_ptr<SequenceSource> make_window_source(const TrainOptions& o,
                                                   const LlamaConfig& config,
                                                   std::string& data_line) {
  WindowLoader loader(o.data, token_file_format_from_name(o.data_format), config.vocab_size,
                      o.ctx, o.shuffle == "on", o.seed);
  data_line = fmt::format("{} windows of {} tokens per epoch ({} tokens), shuffle {}",
                          loader.windows_per_epoch(), o.ctx, loader.total_tokens(), o.shuffle);
  return std::make_unique<WindowSource>(std::move(loader));
}

int64_t count_params(const std::vector<TrainableParam>& params) {
  int64_t n = 0;
  for (const TrainableParam& p : params) n += p.master->numel();
  return n;
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

// The memory plan of this run's options on a backend with these traits: CUDA (bf16 activations
// and frozen weights, fp32 master, gradients and moments, cuBLASLt workspace, the attention
// family's accumulators) or CPU (fp32 everywhere).
MemoryPlan memory_plan_of(const TrainOptions& o, const LlamaConfig& config,
                          const BackendTraits& backend) {
  MemoryPlanInput in;
  in.config = config;
  in.lora = lora_config_of(o);
  in.trainable = parse_trainable(o.trainable);
  in.seq_len = o.ctx;
  in.classifier_chunk = o.classifier_chunk;
  in.backend = backend;
  return plan_training_memory(in);
}

// The per-rank memory of the data-parallel step (model/memory_plan.h), for --dry-run.
std::string format_rank_footprint(const MemoryPlan& plan, int world, bool cuda) {
  const RankFootprint f = sharded_rank_footprint(plan, world, cuda);
  return fmt::format(
      "  data parallel {:>4} rank{} {:>10}   per rank: AdamW moments {} replaced by shards {} "
      "(fp32 master, exp_avg, exp_avg_sq, gradient: at most {} of {} elements), plus gathered "
      "parameters{} {}\n",
      world, world == 1 ? " " : "s", format_bytes(f.total), format_bytes(f.full_moments),
      format_bytes(f.shard_bytes), f.shard, f.trained,
      cuda ? " and NCCL's padded buffers" : "", format_bytes(f.flat_bytes));
}

void print_memory_plan(const TrainOptions& o, int world) {
  const LlamaConfig config = read_config_only(o.model);
  // auto plans for the backend a real run would take on this machine.
  const BackendTraits traits =
      backend_traits(resolve_device(o.device), parse_attention_kernel(o.attention_kernel));
  const bool cuda = traits.kind == BackendKind::Cuda;
  const MemoryPlan plan = memory_plan_of(o, config, traits);
  fmt::print("memory plan    {} at -ctx {} on {} ({} layers, hidden {}, vocab {}; {})\n", o.model,
             o.ctx, backend_kind_name(traits.kind), config.num_hidden_layers, config.hidden_size,
             config.vocab_size,
             cuda ? "bf16 activations and frozen weights, fp32 master/gradients/moments, "
                        "attention " + std::string(attention_kernel_name(traits.attention_kernel))
                  : std::string("fp32 everywhere"));
  fmt::print("{}", format_memory_plan(plan));
  if (world > 1 || o.sharded_optimizer)
    fmt::print("{}", format_rank_footprint(plan, world, cuda));
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

// Test-only fault injection: LL_TEST_DIST_FAULT="RANK:STEP:kill|hang" makes rank RANK die
// (SIGKILL, as a crash or the OOM killer would) or hang at the start of step STEP.
void inject_test_fault(int rank, int64_t step) {
  const char* env = std::getenv("LL_TEST_DIST_FAULT");
  if (env == nullptr) return;
  int fault_rank = -1;
  long long fault_step = -1;
  char what[8] = {};
  if (std::sscanf(env, "%d:%lld:%7s", &fault_rank, &fault_step, what) != 3) return;
  if (fault_rank != rank || fault_step != step) return;
  fmt::print(stderr, "rank {}: LL_TEST_DIST_FAULT: {} at step {}\n", rank, what, step);
  std::fflush(stderr);
  if (std::string_view(what) == "kill") ::raise(SIGKILL);
  for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
}

}  // namespace

TrainResult run_training(const TrainOptions& o) {
  dist::SingleProcessCommunicator single;
  return run_training(o, single);
}

TrainResult run_training(const TrainOptions& o, dist::Communicator& communicator) {
  validate_train_options(o);
  const int world = communicator.world_size(), rank = communicator.rank();
  const bool lead = rank == 0;  // prints and writes what the run has once
  if (o.dry_run) {
    if (lead) print_memory_plan(o, o.world_size > 0 ? int(o.world_size) : world);
    return TrainResult{};
  }
  const auto t_start = std::chrono::steady_clock::now();
  set_rank_threads(communicator);
  // One GPU per rank of a node (its local rank); a world of one takes GPU 0.
  std::unique_ptr<Backend> backend = make_backend(o.device, communicator.local_rank(),
                                                  parse_attention_kernel(o.attention_kernel));
  // The data-parallel step (engine/parallel/sharded_optimizer.h): always with several ranks, on request
  // in a world of one (the same path through NCCL on one GPU).
  const bool sharded_step = world > 1 || o.sharded_optimizer;

  // Base model, and the data before the weights load: bad data (or SFT records) fail fast.
  std::unique_ptr<SequenceSource> source;
  std::string data_line;
  LlamaWeights weights = [&] {
    auto files = open_model_files(o.model);
    source = o.sft.empty() ? make_window_source(o, files->config, data_line)
                           : make_sft_source(o, files->config, data_line, lead);
    return load_llama_weights(*files);
  }();
  const LlamaConfig config = weights.config;
  const std::string fingerprint = model_fingerprint(weights);
  // Every rank must train the same model with the same options on the same data.
  dist::check_ranks_agree(
      communicator,
      dist::fnv1a_64(fingerprint + "\n" + train_options_json(o) + "\n" + describe_data_files(o)),
      "model, options and data (model fingerprint, every option, data file names and sizes)");
  // The whole run's memory, reserved before the weights go to the device: a run that cannot
  // fit says so now, with the plan's numbers.
  const bool cuda = backend->kind() == BackendKind::Cuda;
  const MemoryPlan plan = memory_plan_of(o, config, backend->traits());
  const int64_t planned_bytes =
      sharded_step ? sharded_rank_footprint(plan, world, cuda).total : plan.total();
  backend->reserve(planned_bytes - backend->memory().in_use);

  // Context: position interpolation and the attention pattern.
  ForwardSpec spec;
  spec.rope_scale = o.rope_factor > 0 ? o.rope_factor : position_interpolation_factor(config, o.ctx);
  spec.classifier_chunk = o.classifier_chunk;
  if (o.full_attn) {
    spec.attn_mode = AttnMode::Dense;
  } else {
    spec.attn_mode = o.attn_mode == "s2-roll" ? AttnMode::S2Roll : AttnMode::S2;
    const double g = double(o.ctx) * o.group_ratio;
    LL_CHECK(g >= 2.0,
             "S2-Attn group size -ctx x --group-ratio = {} x {} = {} is below 2 tokens: use a "
             "larger --group-ratio or -ctx, or --full-attn",
             o.ctx, o.group_ratio, g);
    LL_CHECK(config.num_attention_heads % 2 == 0,
             "S2-Attn shifts half of the heads, but the model has {} heads: use --full-attn",
             config.num_attention_heads);
    spec.group_size = s2_group_size(o.ctx, o.group_ratio);
  }

  // Model with LoRA+.
  ModelSetup setup;
  setup.lora = lora_config_of(o);
  setup.trainable = parse_trainable(o.trainable);
  setup.seed = o.seed;
  setup.training = true;
  setup.optimizer_moments = !sharded_step;  // the sharded optimizer holds them, per rank
  LlamaModel model(*backend, weights, setup);
  weights = LlamaWeights{};  // the backend holds its own copy now
  if (!o.init_adapter.empty()) model.load_adapter(read_adapter_dir(o.init_adapter));

  // Resume.
  int64_t step = 0, tokens_seen = 0;
  std::string resumed_from;
  std::string resumed_attention;  // the attention family the checkpoint recorded
  std::optional<Checkpoint> sharded_resume;  // the checkpoint the sharded optimizer resumes
  if (!o.resume.empty()) {
    std::string dir = o.resume;
    if (o.resume == "auto") {
      const std::optional<std::string> latest = latest_checkpoint(o.out);
      dir = latest ? *latest : "";
      if (!latest && lead)
        fmt::print("resume         no checkpoint in {}: starting a new run\n", o.out);
    }
    if (!dir.empty()) {
      Checkpoint ck = read_checkpoint(dir);
      LL_CHECK(ck.state.model_fingerprint == fingerprint,
               "cannot resume from {}: it was trained on another base model (fingerprint {}, "
               "this model {})",
               dir, ck.state.model_fingerprint, fingerprint);
      check_resume_options(ck.state.run_options_json, train_options_json(o), dir,
                           ck.state.world_size, world);
      if (sharded_step) {
        model.load_adapter(ck.adapter);  // moments: the sharded optimizer's, below
      } else if (ck.shards.empty()) {
        restore_checkpoint(model, ck);
      } else {
        restore_sharded_into_model(model, ck);
      }
      source->seek(ck.state.loader);
      step = ck.state.step;
      tokens_seen = ck.state.tokens_seen;
      resumed_from = dir;
      resumed_attention = ck.state.attention_kernel;
      if (sharded_step) sharded_resume = std::move(ck);
    }
  }

  // Data parallelism: the optimizer state sharded over the ranks, seeded from the model (or
  // the checkpoint's shards, re-sharded when the world size changed).
  std::unique_ptr<dist::ShardedOptimizer> sharded;
  if (sharded_step) {
    dist::ShardTransportOptions transport;
    transport.timeout_s = o.dist_timeout;
    sharded = std::make_unique<dist::ShardedOptimizer>(*backend, communicator, model.params(),
                                                       transport);
    if (sharded_resume) {
      sharded->import_shard(checkpoint_shard(model, *sharded_resume, sharded->layout(), rank));
      sharded_resume.reset();
    }
  }
  // The shared read stream (engine/parallel/rank_windows.h): reads consumed by all ranks so far.
  const int64_t per_epoch = source->per_epoch();
  int64_t shared_read = dist::read_of_position(source->position(), per_epoch);
  auto shared_position = [&] {
    return world == 1 ? source->position() : dist::loader_position(shared_read, per_epoch);
  };

  std::optional<MetricsLog> metrics;  // rank 0's
  if (lead) {
    fs::create_directories(o.out);
    metrics.emplace(o.out + "/metrics.jsonl", resumed_from.empty() ? -1 : step);
    metrics->log_event("attention", attention_event_fields(o.attention_kernel,
                                                           backend->traits().attention_kernel,
                                                           resumed_attention));
  }
  const int64_t n_trained = count_params(model.params());
  if (lead) {
    fmt::print("model          {} ({} layers, hidden {}, {} heads / {} kv, vocab {}, "
               "max_position_embeddings {})\n",
               o.model, config.num_hidden_layers, config.hidden_size, config.num_attention_heads,
               config.num_key_value_heads, config.vocab_size, config.max_position_embeddings);
    const std::string s2_kind = spec.attn_mode == AttnMode::S2Roll ? " (roll form)" : "";
    fmt::print("context        {} tokens{}, position interpolation factor {}, {}\n", o.ctx,
               o.sft.empty() ? "" : " at most (each SFT example at its own length)",
               spec.rope_scale,
               spec.attn_mode == AttnMode::Dense ? std::string("full attention")
               : o.sft.empty()
                   ? fmt::format("S2-Attn{} group {} (shifted half by {})", s2_kind,
                                 spec.group_size, spec.group_size / 2)
                   : fmt::format("S2-Attn{} group = example length x {} (even, >= 2; {} at -ctx)",
                                 s2_kind, o.group_ratio, spec.group_size));
    fmt::print("trained        {}; base tensors: {}; {} parameters in {} tensors\n",
               o.lora_rank > 0 ? fmt::format("LoRA r {} alpha {} on {}", o.lora_rank, o.lora_alpha,
                                             o.lora_targets)
                               : std::string("no adapters (full training)"),
               o.trainable, n_trained, model.params().size());
    fmt::print("data           {}\n", data_line);
    fmt::print("optimizer      AdamW lr {} ({} warmup {}), betas {}/{}, eps {}, wd {}, clip {}, "
               "{} {} per step\n"
               "backend        {}\n",
               o.lr, o.schedule, o.warmup, o.adam_beta1, o.adam_beta2, o.adam_eps, o.weight_decay,
               o.max_grad_norm, o.grad_accum, source->unit(), describe_backend(*backend));
    if (sharded_step)
      fmt::print("data parallel  {} rank{} ({}; collectives: {}), {} {} per rank and step = {} "
                 "per step, optimizer state sharded ({} to {} elements per rank)\n",
                 world, world == 1 ? "" : "s", communicator.backend_name(),
                 sharded->transport_name(), o.grad_accum, source->unit(), world * o.grad_accum,
                 sharded->layout().shard_size(world - 1), sharded->layout().shard_size(0));
    if (!resumed_from.empty()) fmt::print("resume         from {} (step {})\n", resumed_from, step);
    const std::string attention_note =
        attention_resume_note(resumed_attention, backend->traits().attention_kernel);
    if (!attention_note.empty()) fmt::print("resume         {}\n", attention_note);
    std::fflush(stdout);
  }

  LrScheduleConfig schedule;
  schedule.schedule = lr_schedule_from_name(o.schedule);
  schedule.lr = o.lr;
  schedule.warmup_steps = o.warmup;
  schedule.total_steps = o.steps;
  AdamWConfig adamw;
  adamw.beta1 = o.adam_beta1;
  adamw.beta2 = o.adam_beta2;
  adamw.eps = o.adam_eps;
  adamw.weight_decay = o.weight_decay;

  TrainResult result;
  result.first_step = step;
  std::string last_checkpoint = resumed_from;
  TrainingSequence seq;
  ProgressLine progress("train step");  // updated by rank 0 only
  const auto t_loop = std::chrono::steady_clock::now();
  int64_t tokens_this_run = 0;
  auto save = [&](int64_t at_step) {
    if (world == 1) {
      last_checkpoint = write_checkpoint(o.out,
                                         make_checkpoint(model, o, at_step, source->position(),
                                                         tokens_seen, fingerprint, 1,
                                                         sharded.get()),
                                         o.keep_checkpoints);
    } else {
      Checkpoint ck;
      if (lead) {
        ck = make_checkpoint(model, o, at_step, shared_position(), tokens_seen, fingerprint, world);
      } else {
        ck.state.step = at_step;
      }
      last_checkpoint = write_sharded_checkpoint(o.out, ck, sharded->export_shard(), communicator,
                                                 o.keep_checkpoints);
    }
    if (metrics)
      metrics->log_event("checkpoint", fmt::format("\"step\": {}, \"path\": {}", at_step,
                                                   nlohmann::json(last_checkpoint).dump()));
  };
  auto last_good = [&] {
    return last_checkpoint.empty() ? std::string("no checkpoint was written in this run")
                                   : "the last good checkpoint is " + last_checkpoint;
  };

  while (step < o.steps) {
    const auto t_step = std::chrono::steady_clock::now();
    inject_test_fault(rank, step + 1);
    const int64_t epoch_before = shared_position().epoch;
    double loss_sum = 0.0, mean_loss_sum = 0.0;
    int64_t labelled = 0, step_tokens = 0, first_count = -1;
    bool equal_counts = true;  // every micro-batch had as many labels as the first
    try {
      model.zero_grads();
      // This rank's block of the step's reads (a world of one just goes on reading).
      if (world > 1)
        source->seek(dist::loader_position(shared_read + rank * o.grad_accum, per_epoch));
      for (int64_t micro = 0; micro < o.grad_accum; ++micro) {
        source->next(seq);
        const int64_t n = int64_t(seq.tokens.size());
        // As the Hugging Face Trainer does: each micro-batch's loss is the mean over its
        // labelled tokens, and the step averages the micro-batches (windows all have N-1
        // labels, so this is the step's mean over labelled tokens).
        const float loss_scale = float(1.0 / double(o.grad_accum * seq.labelled));
        if (spec.attn_mode != AttnMode::Dense) spec.group_size = s2_group_size(n, o.group_ratio);
        // On the step's last micro-batch the sharded optimizer reduces each layer's gradients
        // while the backward computes the layers below.
        GradientsReady on_ready;
        if (sharded && micro + 1 == o.grad_accum) {
          on_ready = [&, context = fmt::format("step {}", step + 1)](std::span<const int> ps) {
            try {
              sharded->gradients_ready(ps, context);
            } catch (const Error& e) {
              throw CollectiveFailure(e.what());  // names rank and step already
            }
          };
        }
        const LossSum ls =
            model.forward_backward(seq.tokens, seq.targets, spec, loss_scale, on_ready);
        LL_CHECK(ls.count == seq.labelled, "the model scored {} positions, the data labels {}",
                 ls.count, seq.labelled);
        if (first_count < 0) first_count = ls.count;
        equal_counts = equal_counts && ls.count == first_count;
        loss_sum += ls.sum;
        mean_loss_sum += ls.sum / double(ls.count);
        labelled += ls.count;
        step_tokens += n;
      }
    } catch (const CollectiveFailure& e) {
      fail("{}; {}", e.what(), last_good());
    } catch (const Error& e) {
      fail("step {}: {}; {}", step + 1, e.what(), last_good());
    }
    shared_read += world * o.grad_accum;
    const double lr = learning_rate(schedule, step);
    double grad_norm = 0.0;
    if (!sharded) {
      grad_norm = gradient_norm(*backend, model.params());
      LL_CHECK(std::isfinite(grad_norm),
               "step {}: the gradient norm is not finite (diverged: lower --lr?); {}", step + 1,
               last_good());
      adamw_update_all(*backend, model.params(), adamw, lr, step + 1,
                       float(clip_coefficient(grad_norm, o.max_grad_norm)));
    } else {
      // The step's statistics over all ranks: sums, and whether every micro-batch had as many
      // labels as the first (sum of squares x W == square of sums iff all first counts agree).
      std::vector<double> stats = {loss_sum,         mean_loss_sum,           double(labelled),
                                   double(step_tokens), equal_counts ? 0.0 : 1.0,
                                   double(first_count), double(first_count) * double(first_count)};
      try {
        communicator.all_reduce_sum(stats, fmt::format("step {} losses", step + 1));
        grad_norm = sharded->step(adamw, lr, step + 1, o.max_grad_norm,
                                  fmt::format("step {}", step + 1));
      } catch (const Error& e) {
        fail("{}; {}", e.what(), last_good());
      }
      loss_sum = stats[0];
      mean_loss_sum = stats[1];
      labelled = int64_t(stats[2]);
      step_tokens = int64_t(stats[3]);
      equal_counts = stats[4] == 0.0 && stats[6] * double(world) == stats[5] * stats[5];
    }
    ++step;
    if (step == result.first_step + 1) {
      // The plan beside what the first step really took (tensors' peak; the device's own
      // count includes the allocator's cache, the CUDA context and other processes).
      const BackendMemory mem = backend->memory();
      if (metrics)
        metrics->log_event("memory",
                           fmt::format("\"planned_bytes\": {}, \"peak_bytes\": {}, "
                                       "\"device_used_bytes\": {}, \"device_total_bytes\": {}",
                                       planned_bytes, mem.peak, mem.device_used, mem.device_total));
    }
    tokens_seen += labelled;
    tokens_this_run += step_tokens;

    const auto now = std::chrono::steady_clock::now();
    StepMetrics m;
    m.step = step;
    // The mean of the micro-batches' mean losses; with equal counts (windows) it is the pooled
    // mean, computed as such so that window runs log exactly what they always did.
    m.loss = equal_counts ? loss_sum / double(labelled)
                          : mean_loss_sum / double(world * o.grad_accum);
    m.lr = lr;
    m.grad_norm = grad_norm;
    m.tokens_per_s = double(step_tokens) / std::chrono::duration<double>(now - t_step).count();
    m.tokens = tokens_seen;
    m.epoch = shared_position().epoch;
    m.elapsed_s = std::chrono::duration<double>(now - t_start).count();
    if (metrics && (step % o.log_every == 0 || step == o.steps)) metrics->log_step(m);
    if (metrics && m.epoch != epoch_before) {
      metrics->log_event("epoch", fmt::format("\"epoch\": {}, \"step\": {}", m.epoch, step));
      progress.finish();
      fmt::print(stderr, "note: finished pass {} over the data at step {}; starting pass {}\n",
                 m.epoch, step, m.epoch + 1);
    }
    const double run_s = std::chrono::duration<double>(now - t_loop).count();
    if (lead)
      progress.update(step - result.first_step, o.steps - result.first_step,
                      fmt::format("step {} loss {:.4f} lr {:.3g} gnorm {:.3f} {:.0f} tok/s", step,
                                  m.loss, lr, grad_norm, double(tokens_this_run) / run_s));
    result.last_loss = m.loss;
    if (o.save_every > 0 && step % o.save_every == 0 && step < o.steps) save(step);
  }
  if (lead) progress.finish();

  // The final checkpoint (unless this exact step is already saved) and the adapter at <out>/.
  // (A run resumed at its last step has nothing new to save.)
  if (step != result.first_step || last_checkpoint.empty()) save(step);
  result.steps_done = step;
  result.checkpoint = last_checkpoint;
  if (!lead) return result;
  AdapterDir adapter = model.export_adapter(o.model);
  adapter.longlora = LongLoraRecord{spec.rope_scale, o.ctx};  // longlora.json: for export_hf
  write_adapter_dir(o.out, adapter);
  write_loss_curve_svg(o.out + "/loss_curve.svg", MetricsLog::read_steps(o.out + "/metrics.jsonl"),
                       fmt::format("train_longlora: {} at {} tokens", o.model, o.ctx));
  const double total_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  fmt::print("done           {} steps (this run {}), last loss {:.4f}, {:.1f}s, {:.0f} tokens/s\n",
             step, step - result.first_step, result.last_loss, total_s,
             double(tokens_this_run) /
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - t_loop).count());
  const BackendMemory mem = backend->memory();
  fmt::print("memory         peak {} of tensors (plan {}){}\n", format_bytes(mem.peak),
             format_bytes(planned_bytes),
             mem.device_used < 0 ? std::string()
                                 : fmt::format("; device in use {} of {} (cudaMemGetInfo)",
                                               format_bytes(mem.device_used),
                                               format_bytes(mem.device_total)));
  if (sharded && !sharded->timing_summary().empty())
    fmt::print("collectives    {}\n", sharded->timing_summary());
  fmt::print("output         {}/{}trainable_params.safetensors, longlora.json, metrics.jsonl, "
             "loss_curve.svg; checkpoint {}\n",
             o.out,
             o.lora_rank > 0 ? "adapter_model.safetensors, adapter_config.json, " : "",
             last_checkpoint);
  return result;
}

}  // namespace ll
