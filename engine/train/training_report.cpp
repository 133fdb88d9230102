#include "engine/train/training_report.h"

#include <cstdio>
#include <filesystem>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "engine/train/attention_record.h"
#include "kernels/make_backend.h"
#include "model/formats/adapter_io.h"
#include "model/memory_plan.h"

namespace ll {
namespace {

int64_t count_params(const std::vector<TrainableParam>& params) {
  int64_t n = 0;
  for (const TrainableParam& p : params) n += p.master->numel();
  return n;
}

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace

TrainingReport::TrainingReport(const TrainOptions& o, const TrainingSetup& setup,
                               int64_t first_step)
    : options_(o), setup_(setup), first_step_(first_step) {
  if (!setup_.lead) return;
  std::filesystem::create_directories(o.out);
  metrics_.emplace(o.out + "/metrics.jsonl", setup_.resumed_from.empty() ? -1 : first_step);
  metrics_->log_event("attention", attention_event_fields(o.attention_kernel,
                                                          setup_.backend->traits().attention_kernel,
                                                          setup_.resumed_attention));
}

void TrainingReport::print_setup(const StepStrategy& strategy) const {
  if (!setup_.lead) return;
  const TrainOptions& o = options_;
  const LlamaConfig& config = setup_.config;
  const ForwardSpec& spec = setup_.spec;
  const LlamaModel& model = *setup_.model;
  fmt::print(
      "model          {} ({} layers, hidden {}, {} heads / {} kv, vocab {}, "
      "max_position_embeddings {})\n",
      o.model, config.num_hidden_layers, config.hidden_size, config.num_attention_heads,
      config.num_key_value_heads, config.vocab_size, config.max_position_embeddings);
  const std::string s2_kind = spec.attn_mode == AttnMode::S2Roll ? " (roll form)" : "";
  fmt::print("context        {} tokens{}, rope {}, {}\n", o.ctx,
             o.sft.empty() ? "" : " at most (each SFT example at its own length)",
             describe_rope_scaling(spec.rope),
             spec.attn_mode == AttnMode::Dense ? std::string("full attention")
             : o.sft.empty()
                 ? fmt::format("S2-Attn{} group {} (shifted half by {})", s2_kind, spec.group_size,
                               spec.group_size / 2)
                 : fmt::format("S2-Attn{} group = example length x {} (even, >= 2; {} at -ctx)",
                               s2_kind, o.group_ratio, spec.group_size));
  fmt::print("trained        {}; base tensors: {}; {} parameters in {} tensors\n",
             o.lora_rank > 0 ? fmt::format("LoRA r {} alpha {} on {}", o.lora_rank, o.lora_alpha,
                                           o.lora_targets)
                             : std::string("no adapters (full training)"),
             o.trainable, count_params(model.params()), model.params().size());
  fmt::print("data           {}\n", setup_.data_line);
  const char* unit = setup_.source->unit();
  fmt::print(
      "optimizer      AdamW lr {} ({} warmup {}), betas {}/{}, eps {}, wd {}, clip {}, "
      "{} {} per step\n"
      "backend        {}\n",
      o.lr, o.schedule, o.warmup, o.adam_beta1, o.adam_beta2, o.adam_eps, o.weight_decay,
      o.max_grad_norm, o.grad_accum, unit, describe_backend(*setup_.backend));
  fmt::print("activations    {}\n", setup_.schedule_line);
  fmt::print("{}", strategy.setup_line(unit));
  if (!setup_.resumed_from.empty())
    fmt::print("resume         from {} (step {})\n", setup_.resumed_from, first_step_);
  const std::string attention_note =
      attention_resume_note(setup_.resumed_attention, setup_.backend->traits().attention_kernel);
  if (!attention_note.empty()) fmt::print("resume         {}\n", attention_note);
  std::fflush(stdout);
}

void TrainingReport::step_done(const StepMetrics& m, int64_t epoch_before, double tokens_per_s) {
  if (m.step == first_step_ + 1) {
    // The plan beside what the first step really took (tensors' peak; the device's own
    // count includes the allocator's cache, the CUDA context and other processes).
    const BackendMemory mem = setup_.backend->memory();
    if (metrics_)
      metrics_->log_event(
          "memory", fmt::format("\"planned_bytes\": {}, \"peak_bytes\": {}, "
                                "\"device_used_bytes\": {}, \"device_total_bytes\": {}",
                                setup_.planned_bytes, mem.peak, mem.device_used, mem.device_total));
  }
  const TrainOptions& o = options_;
  if (metrics_ && (m.step % o.log_every == 0 || m.step == o.steps)) metrics_->log_step(m);
  if (metrics_ && m.epoch != epoch_before) {
    metrics_->log_event("epoch", fmt::format("\"epoch\": {}, \"step\": {}", m.epoch, m.step));
    progress_.finish();
    fmt::print(stderr, "note: finished pass {} over the data at step {}; starting pass {}\n",
               m.epoch, m.step, m.epoch + 1);
  }
  if (setup_.lead)
    progress_.update(m.step - first_step_, o.steps - first_step_,
                     fmt::format("step {} loss {:.4f} lr {:.3g} gnorm {:.3f} {:.0f} tok/s", m.step,
                                 m.loss, m.lr, m.grad_norm, tokens_per_s));
}

void TrainingReport::checkpoint_written(int64_t step, const std::string& path) {
  if (metrics_)
    metrics_->log_event(
        "checkpoint", fmt::format("\"step\": {}, \"path\": {}", step, nlohmann::json(path).dump()));
}

void TrainingReport::finish_progress() {
  if (setup_.lead) progress_.finish();
}

void TrainingReport::summary(int64_t steps_done, double last_loss, int64_t run_tokens,
                             std::chrono::steady_clock::time_point t_loop,
                             const std::string& checkpoint, const StepStrategy& strategy) {
  if (!setup_.lead) return;
  const TrainOptions& o = options_;
  AdapterDir adapter = setup_.model->export_adapter(o.model);
  adapter.longlora = LongLoraRecord{setup_.spec.rope, o.ctx};  // longlora.json: export_hf
  write_adapter_dir(o.out, adapter);
  write_loss_curve_svg(o.out + "/loss_curve.svg", MetricsLog::read_steps(o.out + "/metrics.jsonl"),
                       fmt::format("train_longlora: {} at {} tokens", o.model, o.ctx));
  const double total_s = seconds_since(setup_.t_start);
  fmt::print("done           {} steps (this run {}), last loss {:.4f}, {:.1f}s, {:.0f} tokens/s\n",
             steps_done, steps_done - first_step_, last_loss, total_s,
             double(run_tokens) / seconds_since(t_loop));
  const BackendMemory mem = setup_.backend->memory();
  fmt::print("memory         peak {} of tensors (plan {}){}{}\n", format_bytes(mem.peak),
             format_bytes(setup_.planned_bytes),
             mem.host_peak > 0 ? fmt::format(", {} of offloaded activations in host memory",
                                             format_bytes(mem.host_peak))
                               : std::string(),
             mem.device_used < 0
                 ? std::string()
                 : fmt::format("; device in use {} of {} (cudaMemGetInfo)",
                               format_bytes(mem.device_used), format_bytes(mem.device_total)));
  if (!strategy.timing_summary().empty())
    fmt::print("collectives    {}\n", strategy.timing_summary());
  fmt::print(
      "output         {}/{}trainable_params.safetensors, longlora.json, metrics.jsonl, "
      "loss_curve.svg; checkpoint {}\n",
      o.out, o.lora_rank > 0 ? "adapter_model.safetensors, adapter_config.json, " : "", checkpoint);
}

}  // namespace ll
