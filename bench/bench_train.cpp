// bench_train: LongLoRA training-step speed and memory on a Llama-2-7B-shaped model with
// random weights (no download needed for a speed test): LoRA+ (LoRA on q,k,v,o, trainable
// embeddings and norms), S2-Attn with G = N/4, position interpolation, layer recomputation;
// one full optimizer step (forward, backward, gradient norm, AdamW) per measurement.
//
// Reports per context: median step time, tokens/s, MFU = 6 * P * tokens/s / peak, with P the
// parameters every token passes through (all weights except the embedding table, lm_head
// included: 6.61e9 for Llama-2-7B) and peak the card's dense bf16 rate (H100/H200 SXM 989
// TFLOP/s, A100 312); attention FLOPs and recomputation are not counted, as in DESIGN.md 6.
// Memory: the plan (--dry-run's total) beside the measured peak of live tensors and the
// device's own count (cudaMemGetInfo), and the host memory of offloaded activations.
//
// --offload-layers K keeps the block inputs of layers [0, K) in pinned host memory between the
// forward and the backward; --tile-tokens T runs the row-wise stages over tiles of T tokens
// (model/llama_model.h); --config DIR takes the shape from a config.json (models/configs/...).
//
// --sharded: the data-parallel step of engine/parallel/sharded_optimizer.h instead (bucketed
// gradient reduction started from the backward hook, sharded AdamW, all-gather): alone a world of
// one (NCCL on a GPU), under `mpirun -np W` W ranks with one GPU each. Times are rank 0's, tokens/s
// per rank; the collectives' time and the share hidden behind the backward come from the
// transport (its timing summary, cumulative over all steps of all contexts).
#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "common/tool_main.h"
#include "engine/parallel/communicator.h"
#include "engine/parallel/sharded_optimizer.h"
#include "engine/train/optimizer_step.h"
#include "kernels/attention_kernel.h"
#include "kernels/attention_pattern.h"
#include "kernels/make_backend.h"
#include "model/llama_model.h"
#include "model/llama_weights.h"
#include "model/memory_plan.h"
#include "model/position_interpolation.h"

namespace {

ll::LlamaConfig llama2_7b(int64_t layers) {
  ll::LlamaConfig c;
  c.hidden_size = 4096;
  c.intermediate_size = 11008;
  c.num_hidden_layers = layers;
  c.num_attention_heads = 32;
  c.num_key_value_heads = 32;
  c.vocab_size = 32000;
  c.max_position_embeddings = 4096;
  c.rms_norm_eps = 1e-5;
  return c;
}

// Parameters a token passes through: everything but the embedding table.
double params_through(const ll::LlamaConfig& c) {
  const double d = double(c.hidden_size), f = double(c.intermediate_size);
  const double q = double(c.num_attention_heads * c.head_dim()), kv = double(c.kv_dim());
  const double layer = d * q + 2.0 * d * kv + q * d + 3.0 * d * f + 2.0 * d;
  return double(c.num_hidden_layers) * layer + d + double(c.vocab_size) * d;
}

// Dense bf16 tensor-core peak of the card (TFLOP/s), or nullopt when unknown.
std::optional<double> peak_tflops(const std::string& backend_description) {
  const auto has = [&](const char* s) { return backend_description.find(s) != std::string::npos; };
  if (has("H100 PCIe")) return 756.0;
  if (has("H100") || has("H200") || has("GH200")) return 989.0;
  if (has("A100")) return 312.0;
  return std::nullopt;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double gib(int64_t bytes) { return double(bytes) / double(int64_t(1) << 30); }

int run(int argc, char** argv) {
  std::string device = "auto";
  std::string attention_kernel = "auto";
  std::vector<int64_t> contexts = {8192, 32768};
  int64_t layers = 32;
  int steps = 3;
  int warmup = 1;
  int64_t lora_rank = 8;
  double group_ratio = 0.25;
  std::string attn = "s2";
  int64_t classifier_chunk = 2048;
  int64_t offload_layers = 0;
  int64_t tile_tokens = 0;
  std::string config_dir;
  std::string json_path;
  bool sharded = false;
  CLI::App app{
      "Training-step speed and memory of LongLoRA on a Llama-2-7B-shaped model "
      "(random weights).\nExample: ./bench_train --ctx 8192,32768 --json out.json"};
  app.add_option("--device", device, "auto, cpu or cuda")->capture_default_str();
  app.add_option("--attention-kernel", attention_kernel, ll::kAttentionKernelHelp)
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "simt", "tc-sm80", "tc-sm90", "tc-sm90-atomic-dq"}));
  app.add_option("--ctx", contexts, "context lengths (tokens per step)")
      ->delimiter(',')
      ->capture_default_str();
  app.add_option("--layers", layers, "decoder layers (32 = Llama-2-7B; fewer for a smoke test)")
      ->capture_default_str();
  app.add_option("--steps", steps, "timed optimizer steps per context (median reported)")
      ->capture_default_str();
  app.add_option("--warmup", warmup, "untimed steps first")->capture_default_str();
  app.add_option("--lora-rank", lora_rank, "LoRA rank on q,k,v,o")->capture_default_str();
  app.add_option("--group-ratio", group_ratio, "S2-Attn group size as a fraction of the context")
      ->capture_default_str();
  app.add_option("--attn", attn, "s2 or dense")
      ->capture_default_str()
      ->check(CLI::IsMember({"s2", "dense"}));
  app.add_option("--classifier-chunk", classifier_chunk, "tokens per LM-head chunk")
      ->capture_default_str();
  app.add_option("--offload-layers", offload_layers,
                 "block inputs of this many layers in pinned host memory (0 to layers - 1)")
      ->capture_default_str();
  app.add_option("--tile-tokens", tile_tokens,
                 "rows per tile of the norms, projections and MLP (0: whole)")
      ->capture_default_str();
  app.add_option("--config", config_dir,
                 "a model directory (config.json alone is read) whose shape to use instead of "
                 "Llama-2-7B's, e.g. models/configs/llama-3.1-8b; --layers still applies");
  app.add_option("--json", json_path, "also write the results as JSON");
  app.add_flag("--sharded", sharded,
               "time the data-parallel step (sharded AdamW, gradients reduced during the "
               "backward; NCCL on GPUs); under mpirun -np W, one GPU per rank");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  LL_CHECK(steps >= 1 && warmup >= 0 && layers >= 1, "--steps >= 1, --warmup >= 0, --layers >= 1");

  ll::LlamaConfig config = llama2_7b(layers);
  if (!config_dir.empty()) {
    config = ll::llama_config_from_file(config_dir + "/config.json");
    config.num_hidden_layers = layers;
  }
  LL_CHECK(offload_layers >= 0 && offload_layers < layers && tile_tokens >= 0,
           "--offload-layers from 0 to --layers - 1 ({}), --tile-tokens >= 0", layers - 1);
  std::unique_ptr<ll::dist::Communicator> comm;  // --sharded only: no MPI otherwise
  if (sharded) comm = ll::dist::make_communicator();
  const int world = comm ? comm->world_size() : 1;
  const bool lead = !comm || comm->rank() == 0;  // prints and writes
  std::unique_ptr<ll::Backend> backend = ll::make_backend(
      device, comm ? comm->local_rank() : 0, ll::parse_attention_kernel(attention_kernel));
  const std::string desc = ll::describe_backend(*backend);
  ll::ModelSetup setup;
  setup.lora = ll::LoraConfig{};
  setup.lora->rank = lora_rank;
  setup.lora->alpha = 2.0 * double(lora_rank);
  setup.trainable = ll::TrainableSet::lora_plus();
  setup.seed = 1;
  setup.training = true;
  setup.optimizer_moments = !sharded;  // the sharded optimizer holds its own
  const auto t_init = std::chrono::steady_clock::now();
  ll::LlamaModel model(*backend, ll::random_llama_weights(config, 1234), setup);
  backend->synchronize();
  const double init_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t_init).count();
  std::unique_ptr<ll::dist::ShardedOptimizer> optimizer;
  if (sharded)
    optimizer = std::make_unique<ll::dist::ShardedOptimizer>(*backend, *comm, model.params());
  const double p_through = params_through(config);
  const std::optional<double> peak = peak_tflops(desc);
  if (!lead) {  // one report: rank 0's
    LL_CHECK(std::freopen("/dev/null", "w", stdout) != nullptr, "cannot silence rank output");
  }
  fmt::print("backend   {}\n", desc);
  if (sharded)
    fmt::print("optimizer sharded over {} rank{} ({}), tokens/s per rank\n", world,
               world == 1 ? "" : "s", optimizer->transport_name());
  fmt::print(
      "model     {} shape, {} layers, random weights (built in {:.1f}s); "
      "LoRA r {} on q,k,v,o + embeddings and norms; {} attention\n",
      config_dir.empty() ? std::string("Llama-2-7B") : config_dir, layers, init_s, lora_rank,
      attn == "s2" ? fmt::format("S2-Attn (G = N x {})", group_ratio) : "dense causal");
  fmt::print("schedule  {} of {} layers' block inputs in host memory; {}\n", offload_layers, layers,
             tile_tokens > 0 ? fmt::format("token tiles of {}", tile_tokens)
                             : std::string("whole tensors"));
  fmt::print("MFU       6 x {:.3g} params x tokens/s / {} TFLOP/s\n", p_through,
             peak ? fmt::format("{:.0f}", *peak) : std::string("(unknown peak)"));
  fmt::print("{:>7} {:>6} {:>10} {:>10} {:>7} {:>10} {:>10} {:>10} {:>10} {:>10}\n", "ctx", "G",
             "step_ms", "tokens/s", "MFU", "peak_GiB", "plan_GiB", "device_GiB", "host_GiB",
             "hplan_GiB");

  ll::AdamWConfig adamw;
  nlohmann::json rows = nlohmann::json::array();
  std::mt19937 rng(7);
  int64_t step_number = 0;
  for (int64_t n : contexts) {
    ll::ForwardSpec spec;
    spec.rope = ll::rope_for_context(config.rope_scaling, config.max_position_embeddings, n,
                                     std::nullopt, 0.0)
                    .rope;
    spec.classifier_chunk = classifier_chunk;
    spec.tile_tokens = tile_tokens;
    spec.offloaded_layers = offload_layers;
    if (attn == "s2") {
      spec.attn_mode = ll::AttnMode::S2;
      spec.group_size = ll::s2_group_size(n, group_ratio);
    }
    std::vector<int32_t> tokens(static_cast<size_t>(n)), targets(static_cast<size_t>(n));  // [N]
    for (int32_t& t : tokens) t = int32_t(rng() % uint32_t(config.vocab_size));
    for (int64_t i = 0; i + 1 < n; ++i) targets[size_t(i)] = tokens[size_t(i + 1)];
    targets[size_t(n - 1)] = -1;
    const float loss_scale = float(1.0 / double(n - 1));

    ll::MemoryPlanInput in;
    in.config = config;
    in.lora = setup.lora;
    in.trainable = setup.trainable;
    in.seq_len = n;
    in.classifier_chunk = classifier_chunk;
    in.backend = backend->traits();
    in.tile_tokens = tile_tokens;
    in.offloaded_layers = offload_layers;
    const ll::MemoryPlan plan = ll::plan_training_memory(in);
    const bool nccl = backend->kind() == ll::BackendKind::Cuda;
    const int64_t plan_bytes =
        sharded ? ll::sharded_rank_footprint(plan, world, nccl).total : plan.total();

    backend->reset_peak();
    std::vector<double> times;
    double loss = 0.0;
    for (int s = 0; s < warmup + steps; ++s) {
      backend->synchronize();
      const auto t0 = std::chrono::steady_clock::now();
      model.zero_grads();
      ++step_number;
      const std::string context = fmt::format("step {}", step_number);
      ll::GradientsReady on_ready;
      if (optimizer)
        on_ready = [&](std::span<const int> ps) { optimizer->gradients_ready(ps, context); };
      const ll::LossSum ls = model.forward_backward(tokens, targets, spec, loss_scale, on_ready);
      if (optimizer) {
        optimizer->step(adamw, 1e-5, step_number, 1.0, context);
      } else {
        const double norm = ll::gradient_norm(*backend, model.params());
        ll::adamw_update_all(*backend, model.params(), adamw, 1e-5, step_number,
                             float(std::min(1.0, 1.0 / std::max(norm, 1e-12))));
      }
      backend->synchronize();
      const double dt =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (s >= warmup) times.push_back(dt);
      loss = ls.sum / double(ls.count);
    }
    const ll::BackendMemory mem = backend->memory();
    const double t = median(times);
    const double tok_s = double(n) / t;
    const double mfu = peak ? 6.0 * p_through * tok_s / (*peak * 1e12) : -1.0;  // -1: unknown
    fmt::print(
        "{:>7} {:>6} {:>10.1f} {:>10.0f} {:>7} {:>10.2f} {:>10.2f} {:>10} {:>10.2f} {:>10.2f}\n", n,
        spec.group_size, t * 1e3, tok_s,
        mfu >= 0 ? fmt::format("{:.1f}%", mfu * 100.0) : std::string("-"), gib(mem.peak),
        gib(plan_bytes),
        mem.device_used < 0 ? std::string("-") : fmt::format("{:.2f}", gib(mem.device_used)),
        gib(mem.host_peak), gib(plan.host_bytes));
    std::fflush(stdout);
    rows.push_back({{"ctx", n},
                    {"group_size", spec.group_size},
                    {"attn", attn},
                    {"layers", layers},
                    {"step_ms", t * 1e3},
                    {"step_ms_all", times},
                    {"tokens_per_s", tok_s},
                    {"mfu", mfu >= 0 ? nlohmann::json(mfu) : nlohmann::json(nullptr)},
                    {"loss", loss},
                    {"peak_bytes", mem.peak},
                    {"plan_bytes", plan_bytes},
                    {"host_peak_bytes", mem.host_peak},
                    {"host_plan_bytes", plan.host_bytes},
                    {"offload_layers", offload_layers},
                    {"tile_tokens", tile_tokens},
                    {"device_used_bytes", mem.device_used}});
    if (optimizer) {
      rows.back()["world_size"] = world;
      rows.back()["collectives"] = optimizer->timing_summary();
      fmt::print("          collectives so far: {}\n",
                 optimizer->timing_summary().empty() ? std::string("(not measured on the host)")
                                                     : optimizer->timing_summary());
    }
  }
  if (!json_path.empty() && lead) {
    std::ofstream f(json_path);
    f << nlohmann::json{{"backend", desc},
                        {"params_through", p_through},
                        {"peak_tflops", peak ? nlohmann::json(*peak) : nlohmann::json(nullptr)},
                        {"rows", rows}}
             .dump(2)
      << "\n";
    LL_CHECK(f.good(), "cannot write {}", json_path);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return ll::run_tool("bench_train", [&] { return run(argc, argv); });
}
