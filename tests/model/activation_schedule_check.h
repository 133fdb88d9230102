#pragma once
// Activation offload and token tiles change where a training step keeps its tensors, never what
// it computes: a few LoRA+ steps (gradient accumulation over two sequences, AdamW) run under
// several schedules on one backend, and their losses, gradients and trained values compared
// (tests/model/test_activation_schedule.cpp on the CPU, *_gpu.cpp on the CUDA backend).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>
#include <vector>

#include "kernels/backend.h"
#include "model/llama_model.h"

namespace ll::test {

struct ScheduleRun {
  std::vector<double> losses;             // per step: the mean over labelled tokens
  std::vector<std::vector<float>> grads;  // per step and parameter, concatenated
  std::vector<float> trained;             // every trained tensor after the last step
  BackendMemory memory;                   // after the run
};

struct ScheduleCase {
  LlamaConfig config;
  AttnMode mode = AttnMode::S2;
  int64_t group_size = 4;
  int64_t n = 37;
  bool sft = false;  // prompt tokens unlabelled (target -1), as --sft forms them
  int steps = 2;
};

constexpr double kScheduleLr = 2e-3;  // AdamW's learning rate in run_schedule

inline LlamaConfig schedule_config() {
  LlamaConfig c;
  c.vocab_size = 61;
  c.hidden_size = 128;  // head dim 32: the smallest the CUDA attention kernels take
  c.intermediate_size = 96;
  c.num_hidden_layers = 4;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 64;
  c.rms_norm_eps = 1e-5;
  return c;
}

// LoRA+ (rank 4 on the attention projections and down_proj, embeddings and norms trained).
inline ModelSetup schedule_setup() {
  ModelSetup setup;
  setup.lora = LoraConfig{};
  setup.lora->rank = 4;
  setup.lora->targets = {"q_proj", "k_proj", "v_proj", "o_proj", "down_proj"};
  setup.trainable = TrainableSet::lora_plus();
  setup.seed = 7;
  setup.training = true;
  return setup;
}

inline std::vector<float> download_all(Backend& backend, const Tensor& t) {
  std::vector<float> out(size_t(t.numel()));
  backend.download_f32(out.data(), t);
  return out;
}

// `steps` steps of two sequences each under (tile_tokens, offloaded_layers).
inline ScheduleRun run_schedule(Backend& backend, const ScheduleCase& cs, int64_t tile,
                                int64_t offloaded) {
  LlamaModel model(backend, random_llama_weights(cs.config, 3, 0.1f), schedule_setup());
  ForwardSpec spec;
  spec.attn_mode = cs.mode;
  spec.group_size = cs.mode == AttnMode::Dense ? 0 : cs.group_size;
  spec.classifier_chunk = 16;
  spec.tile_tokens = tile;
  spec.offloaded_layers = offloaded;
  AdamWStep update;
  update.config = AdamWConfig{0.9, 0.95, 1e-8, 0.0};
  update.lr = kScheduleLr;
  ScheduleRun run;
  const int64_t v = cs.config.vocab_size;
  for (int step = 0; step < cs.steps; ++step) {
    model.zero_grads();
    double sum = 0.0;
    int64_t count = 0;
    for (int micro = 0; micro < 2; ++micro) {
      std::vector<int32_t> tokens(size_t(cs.n)), targets(size_t(cs.n));
      const int64_t salt = 3 + 2 * step + micro;
      for (int64_t i = 0; i < cs.n; ++i) tokens[size_t(i)] = int32_t((i * i * salt + 5 * i) % v);
      for (int64_t i = 0; i < cs.n; ++i) {
        const bool prompt = cs.sft && i < cs.n / 3;
        targets[size_t(i)] = i + 1 < cs.n && !prompt ? tokens[size_t(i + 1)] : -1;
      }
      const LossSum ls = model.forward_backward(tokens, targets, spec, 0.5f / float(cs.n));
      sum += ls.sum;
      count += ls.count;
    }
    run.losses.push_back(sum / double(count));
    std::vector<float> g;
    for (const TrainableParam& p : model.params()) {
      const std::vector<float> one = download_all(backend, *p.grad);
      g.insert(g.end(), one.begin(), one.end());
    }
    run.grads.push_back(std::move(g));
    update.step = step + 1;
    for (TrainableParam& p : model.params())
      backend.adamw_step(*p.master, *p.value, *p.grad, *p.exp_avg, *p.exp_avg_sq, update);
  }
  for (const TrainableParam& p : model.params()) {
    const std::vector<float> one = download_all(backend, *p.master);
    run.trained.insert(run.trained.end(), one.begin(), one.end());
  }
  run.memory = backend.memory();
  return run;
}

// Largest |a - b| over the largest |a| (0 when a is all zero).
inline double max_rel_diff(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  double diff = 0.0, scale = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::fabs(double(a[i]) - double(b[i])));
    scale = std::max(scale, std::fabs(double(a[i])));
  }
  return scale == 0.0 ? diff : diff / scale;
}

inline void check_identical(const ScheduleRun& a, const ScheduleRun& b) {
  CHECK(a.losses == b.losses);
  CHECK(a.grads == b.grads);
  CHECK(a.trained == b.trained);
}

}  // namespace ll::test
