#include "engine/trainer.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "data/window_loader.h"
#include "engine/checkpoint.h"
#include "engine/metrics_log.h"
#include "engine/optimizer_step.h"
#include "engine/progress.h"
#include "kernels/make_backend.h"
#include "model/adapter_io.h"
#include "model/llama_model.h"
#include "model/llama_weights.h"
#include "model/memory_plan.h"
#include "model/model_fingerprint.h"
#include "model/position_interpolation.h"
#include "model/tensor_source.h"
#include "optim/adamw.h"
#include "optim/grad_clip.h"
#include "optim/lr_schedule.h"

namespace ll {
namespace {

namespace fs = std::filesystem;

// Options that change what a resumed run computes; a checkpoint written with other values
// cannot continue this run.
const char* const kResumeKeys[] = {"ctx",        "grad-accum",   "seed",      "shuffle",
                                   "lora-rank",  "lora-alpha",   "lora-targets", "trainable",
                                   "full-attn",  "attn-mode",    "group-ratio", "data-format",
                                   "rope-factor"};

void check_resume_options(const std::string& saved_json, const std::string& current_json,
                          const std::string& checkpoint) {
  nlohmann::json saved, current;
  try {
    saved = nlohmann::json::parse(saved_json);
    current = nlohmann::json::parse(current_json);
  } catch (const nlohmann::json::exception&) {
    return;  // an older or foreign checkpoint without options: nothing to compare
  }
  if (!saved.is_object()) return;
  for (const char* key : kResumeKeys) {
    if (!saved.contains(key) || !current.contains(key)) continue;
    LL_CHECK(saved[key] == current[key],
             "cannot resume from {}: it was trained with --{} {}, this run has --{} {} (use the "
             "same options, or a new --out directory to start a new run)",
             checkpoint, key, saved[key].dump(), key, current[key].dump());
  }
}

Checkpoint make_checkpoint(const LlamaModel& model, const TrainOptions& o, int64_t step,
                           const LoaderPosition& loader, int64_t tokens_seen,
                           const std::string& fingerprint) {
  Checkpoint ck;
  ck.adapter = model.export_adapter(o.model);
  Backend& backend = model.backend();
  for (const TrainableParam& p : model.params()) {
    HostTensor m{p.shape, std::vector<float>(size_t(p.exp_avg->numel()))};
    HostTensor v{p.shape, std::vector<float>(size_t(p.exp_avg_sq->numel()))};
    backend.download_f32(m.values.data(), *p.exp_avg);
    backend.download_f32(v.values.data(), *p.exp_avg_sq);
    ck.moments.exp_avg.emplace(p.name, std::move(m));
    ck.moments.exp_avg_sq.emplace(p.name, std::move(v));
  }
  ck.state.step = step;
  ck.state.loader = loader;
  ck.state.seed = o.seed;
  ck.state.tokens_seen = tokens_seen;
  ck.state.model_fingerprint = fingerprint;
  ck.state.run_options_json = train_options_json(o);
  return ck;
}

void restore_checkpoint(LlamaModel& model, const Checkpoint& ck) {
  model.load_adapter(ck.adapter);
  Backend& backend = model.backend();
  for (TrainableParam& p : model.params()) {
    auto m = ck.moments.exp_avg.find(p.name);
    auto v = ck.moments.exp_avg_sq.find(p.name);
    LL_CHECK(m != ck.moments.exp_avg.end() && v != ck.moments.exp_avg_sq.end(),
             "the checkpoint has no optimizer state for {}", p.name);
    LL_CHECK(m->second.shape == p.shape && v->second.shape == p.shape,
             "the checkpoint's optimizer state for {} has another shape", p.name);
    backend.upload_f32(*p.exp_avg, m->second.values.data());
    backend.upload_f32(*p.exp_avg_sq, v->second.values.data());
  }
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

// The memory plan of this run's options on the CUDA (bf16 activations and frozen weights, fp32
// master, gradients and moments, cuBLASLt workspace) or CPU (fp32 everywhere) backend.
MemoryPlan memory_plan_of(const TrainOptions& o, const LlamaConfig& config, bool cuda) {
  MemoryPlanInput in;
  in.config = config;
  in.lora = lora_config_of(o);
  in.trainable = parse_trainable(o.trainable);
  in.seq_len = o.ctx;
  in.classifier_chunk = o.classifier_chunk;
  in.activation_dtype = cuda ? DType::BF16 : DType::F32;
  in.cublaslt_workspace_bytes = cuda ? kCublasLtWorkspaceBytes : 0;
  return plan_training_memory(in);
}

void print_memory_plan(const TrainOptions& o) {
  const LlamaConfig config = read_config_only(o.model);
  // auto plans for the backend a real run would take on this machine.
  const bool cuda = resolve_device(o.device) == "cuda";
  const MemoryPlan plan = memory_plan_of(o, config, cuda);
  fmt::print("memory plan    {} at -ctx {} on {} ({} layers, hidden {}, vocab {}; {})\n", o.model,
             o.ctx, cuda ? "cuda" : "cpu", config.num_hidden_layers, config.hidden_size,
             config.vocab_size,
             cuda ? "bf16 activations and frozen weights, fp32 master/gradients/moments"
                  : "fp32 everywhere");
  fmt::print("{}", format_memory_plan(plan));
}

}  // namespace

TrainResult run_training(const TrainOptions& o) {
  validate_train_options(o);
  if (o.dry_run) {
    print_memory_plan(o);
    return TrainResult{};
  }
  const auto t_start = std::chrono::steady_clock::now();
  std::unique_ptr<Backend> backend = make_backend(o.device);

  // Base model.
  LlamaWeights weights = [&] {
    auto files = open_model_files(o.model);
    return load_llama_weights(*files);
  }();
  const LlamaConfig config = weights.config;
  const std::string fingerprint = model_fingerprint(weights);
  // The whole run's memory, reserved before the weights go to the device: a run that cannot
  // fit says so now, with the plan's numbers.
  const MemoryPlan plan = memory_plan_of(o, config, backend->name() == "cuda");
  backend->reserve(plan.total() - backend->memory().in_use);

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

  // Data.
  WindowLoader loader(o.data, token_file_format_from_name(o.data_format), config.vocab_size,
                      o.ctx, o.shuffle == "on", o.seed);

  // Model with LoRA+.
  ModelSetup setup;
  setup.lora = lora_config_of(o);
  setup.trainable = parse_trainable(o.trainable);
  setup.seed = o.seed;
  setup.training = true;
  LlamaModel model(*backend, weights, setup);
  weights = LlamaWeights{};  // the backend holds its own copy now
  if (!o.init_adapter.empty()) model.load_adapter(read_adapter_dir(o.init_adapter));

  // Resume.
  int64_t step = 0, tokens_seen = 0;
  std::string resumed_from;
  if (!o.resume.empty()) {
    std::string dir = o.resume;
    if (o.resume == "auto") {
      const std::optional<std::string> latest = latest_checkpoint(o.out);
      dir = latest ? *latest : "";
      if (!latest) fmt::print("resume         no checkpoint in {}: starting a new run\n", o.out);
    }
    if (!dir.empty()) {
      const Checkpoint ck = read_checkpoint(dir);
      LL_CHECK(ck.state.model_fingerprint == fingerprint,
               "cannot resume from {}: it was trained on another base model (fingerprint {}, "
               "this model {})",
               dir, ck.state.model_fingerprint, fingerprint);
      check_resume_options(ck.state.run_options_json, train_options_json(o), dir);
      restore_checkpoint(model, ck);
      loader.seek(ck.state.loader);
      step = ck.state.step;
      tokens_seen = ck.state.tokens_seen;
      resumed_from = dir;
    }
  }

  fs::create_directories(o.out);
  MetricsLog metrics(o.out + "/metrics.jsonl", resumed_from.empty() ? -1 : step);
  const int64_t n_trained = count_params(model.params());
  fmt::print("model          {} ({} layers, hidden {}, {} heads / {} kv, vocab {}, "
             "max_position_embeddings {})\n",
             o.model, config.num_hidden_layers, config.hidden_size, config.num_attention_heads,
             config.num_key_value_heads, config.vocab_size, config.max_position_embeddings);
  fmt::print("context        {} tokens, position interpolation factor {}, {}\n", o.ctx,
             spec.rope_scale,
             spec.attn_mode == AttnMode::Dense
                 ? std::string("full attention")
                 : fmt::format("S2-Attn{} group {} (shifted half by {})",
                               spec.attn_mode == AttnMode::S2Roll ? " (roll form)" : "",
                               spec.group_size, spec.group_size / 2));
  fmt::print("trained        {}; base tensors: {}; {} parameters in {} tensors\n",
             o.lora_rank > 0 ? fmt::format("LoRA r {} alpha {} on {}", o.lora_rank, o.lora_alpha,
                                           o.lora_targets)
                             : std::string("no adapters (full training)"),
             o.trainable, n_trained, model.params().size());
  fmt::print("data           {} windows of {} tokens per epoch ({} tokens), shuffle {}\n",
             loader.windows_per_epoch(), o.ctx, loader.total_tokens(), o.shuffle);
  fmt::print("optimizer      AdamW lr {} ({} warmup {}), betas {}/{}, eps {}, wd {}, clip {}, "
             "{} windows per step\n"
             "backend        {}\n",
             o.lr, o.schedule, o.warmup, o.adam_beta1, o.adam_beta2, o.adam_eps, o.weight_decay,
             o.max_grad_norm, o.grad_accum, describe_backend(*backend));
  if (!resumed_from.empty()) fmt::print("resume         from {} (step {})\n", resumed_from, step);
  std::fflush(stdout);

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
  const int64_t labels_per_window = o.ctx - 1;
  std::vector<int32_t> targets(size_t(o.ctx));
  ProgressLine progress("train step");
  const auto t_loop = std::chrono::steady_clock::now();
  int64_t tokens_this_run = 0;
  auto save = [&](int64_t at_step) {
    last_checkpoint = write_checkpoint(
        o.out, make_checkpoint(model, o, at_step, loader.position(), tokens_seen, fingerprint),
        o.keep_checkpoints);
    metrics.log_event("checkpoint", fmt::format("\"step\": {}, \"path\": {}", at_step,
                                                nlohmann::json(last_checkpoint).dump()));
  };

  while (step < o.steps) {
    const auto t_step = std::chrono::steady_clock::now();
    const int64_t epoch_before = loader.position().epoch;
    double loss_sum = 0.0;
    int64_t labelled = 0;
    try {
      model.zero_grads();
      // Every window has N-1 labels, so the step's mean over labelled tokens is known upfront.
      const float loss_scale = float(1.0 / double(o.grad_accum * labels_per_window));
      for (int64_t micro = 0; micro < o.grad_accum; ++micro) {
        const std::vector<int32_t> window = loader.next();
        for (int64_t t = 0; t + 1 < o.ctx; ++t) targets[size_t(t)] = window[size_t(t + 1)];
        targets[size_t(o.ctx - 1)] = -1;
        const LossSum ls = model.forward_backward(window, targets, spec, loss_scale);
        loss_sum += ls.sum;
        labelled += ls.count;
      }
    } catch (const Error& e) {
      fail("step {}: {}; {}", step + 1, e.what(),
           last_checkpoint.empty() ? std::string("no checkpoint was written in this run")
                                   : "the last good checkpoint is " + last_checkpoint);
    }
    const double grad_norm = gradient_norm(*backend, model.params());
    LL_CHECK(std::isfinite(grad_norm),
             "step {}: the gradient norm is not finite (diverged: lower --lr?); {}", step + 1,
             last_checkpoint.empty() ? std::string("no checkpoint was written in this run")
                                     : "the last good checkpoint is " + last_checkpoint);
    const double lr = learning_rate(schedule, step);
    adamw_update_all(*backend, model.params(), adamw, lr, step + 1,
                     float(clip_coefficient(grad_norm, o.max_grad_norm)));
    ++step;
    if (step == result.first_step + 1) {
      // The plan beside what the first step really took (tensors' peak; the device's own
      // count includes the allocator's cache, the CUDA context and other processes).
      const BackendMemory mem = backend->memory();
      metrics.log_event("memory", fmt::format("\"planned_bytes\": {}, \"peak_bytes\": {}, "
                                              "\"device_used_bytes\": {}, \"device_total_bytes\": {}",
                                              plan.total(), mem.peak, mem.device_used,
                                              mem.device_total));
    }
    tokens_seen += labelled;
    tokens_this_run += o.grad_accum * o.ctx;

    const auto now = std::chrono::steady_clock::now();
    StepMetrics m;
    m.step = step;
    m.loss = loss_sum / double(labelled);
    m.lr = lr;
    m.grad_norm = grad_norm;
    m.tokens_per_s = double(o.grad_accum * o.ctx) /
                     std::chrono::duration<double>(now - t_step).count();
    m.tokens = tokens_seen;
    m.epoch = loader.position().epoch;
    m.elapsed_s = std::chrono::duration<double>(now - t_start).count();
    if (step % o.log_every == 0 || step == o.steps) metrics.log_step(m);
    if (loader.position().epoch != epoch_before) {
      metrics.log_event("epoch", fmt::format("\"epoch\": {}, \"step\": {}",
                                             loader.position().epoch, step));
      progress.finish();
      fmt::print(stderr, "note: finished pass {} over the data at step {}; starting pass {}\n",
                 loader.position().epoch, step, loader.position().epoch + 1);
    }
    const double run_s = std::chrono::duration<double>(now - t_loop).count();
    progress.update(step - result.first_step, o.steps - result.first_step,
                    fmt::format("step {} loss {:.4f} lr {:.3g} gnorm {:.3f} {:.0f} tok/s", step,
                                m.loss, lr, grad_norm, double(tokens_this_run) / run_s));
    result.last_loss = m.loss;
    if (o.save_every > 0 && step % o.save_every == 0 && step < o.steps) save(step);
  }
  progress.finish();

  // The final checkpoint (unless this exact step is already saved) and the adapter at <out>/.
  // (A run resumed at its last step has nothing new to save.)
  if (step != result.first_step || last_checkpoint.empty()) save(step);
  AdapterDir adapter = model.export_adapter(o.model);
  adapter.longlora = LongLoraRecord{spec.rope_scale, o.ctx};  // longlora.json: for export_hf
  write_adapter_dir(o.out, adapter);
  write_loss_curve_svg(o.out + "/loss_curve.svg", MetricsLog::read_steps(o.out + "/metrics.jsonl"),
                       fmt::format("train_longlora: {} at {} tokens", o.model, o.ctx));
  result.steps_done = step;
  result.checkpoint = last_checkpoint;
  const double total_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  fmt::print("done           {} steps (this run {}), last loss {:.4f}, {:.1f}s, {:.0f} tokens/s\n",
             step, step - result.first_step, result.last_loss, total_s,
             double(tokens_this_run) /
                 std::chrono::duration<double>(std::chrono::steady_clock::now() - t_loop).count());
  const BackendMemory mem = backend->memory();
  fmt::print("memory         peak {} of tensors (plan {}){}\n", format_bytes(mem.peak),
             format_bytes(plan.total()),
             mem.device_used < 0 ? std::string()
                                 : fmt::format("; device in use {} of {} (cudaMemGetInfo)",
                                               format_bytes(mem.device_used),
                                               format_bytes(mem.device_total)));
  fmt::print("output         {}/{}trainable_params.safetensors, longlora.json, metrics.jsonl, "
             "loss_curve.svg; checkpoint {}\n",
             o.out,
             o.lora_rank > 0 ? "adapter_model.safetensors, adapter_config.json, " : "",
             last_checkpoint);
  return result;
}

}  // namespace ll
