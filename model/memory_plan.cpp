#include "model/memory_plan.h"

#include <algorithm>

#include <fmt/format.h>

#include "common/error.h"

namespace ll {
RankFootprint sharded_rank_footprint(const MemoryPlan& plan, int world, bool nccl_padding) {
  RankFootprint f;
  for (const MemoryItem& item : plan.items)
    if (item.name == "gradients") f.trained = item.bytes / 4;  // one fp32 per trained element
  f.shard = (f.trained + world - 1) / world;
  f.shard_bytes = 4 * 4 * f.shard;
  f.flat_bytes = 4 * f.trained + (nccl_padding ? 4 * (f.shard + int64_t(world) * f.shard) : 0);
  f.full_moments = 2 * 4 * f.trained;
  f.total = plan.total() - f.full_moments + f.shard_bytes + f.flat_bytes;
  return f;
}

std::string format_bytes(int64_t bytes) {
  const double b = double(bytes);
  if (bytes < 1024) return fmt::format("{} B", bytes);
  if (bytes < (int64_t(1) << 20)) return fmt::format("{:.2f} KiB", b / 1024.0);
  if (bytes < (int64_t(1) << 30)) return fmt::format("{:.2f} MiB", b / 1048576.0);
  return fmt::format("{:.2f} GiB", b / 1073741824.0);
}

MemoryPlan plan_training_memory(const MemoryPlanInput& in) {
  const LlamaConfig& c = in.config;
  validate_llama_config(c, "memory plan");
  LL_CHECK(in.seq_len >= 1, "memory plan: sequence length must be >= 1, got {}", in.seq_len);
  const int64_t n = in.seq_len, d = c.hidden_size, f = c.intermediate_size, v = c.vocab_size;
  const int64_t layers = c.num_hidden_layers, h = c.num_attention_heads;
  const int64_t q_dim = h * c.head_dim(), kv_dim = c.kv_dim();
  const BackendTraits& bt = in.backend;
  // An explicit attention family without kernels for this head dim fails here, before a run.
  check_attention_kernel_head_dim(bt.attention_kernel, c.head_dim());
  const int64_t act = int64_t(dtype_size(bt.activation_dtype));
  const bool separate_value = bt.activation_dtype != DType::F32;  // else value == master
  const int64_t r = in.lora ? in.lora->rank : 0;

  // Parameters: every base tensor frozen (act dtype) or trained (value + fp32 master, grad,
  // exp_avg, exp_avg_sq), plus LoRA A/B (trained).
  int64_t frozen = 0, trained = 0;  // element counts
  auto base = [&](int64_t count, bool is_trained) { (is_trained ? trained : frozen) += count; };
  base(v * d, in.trainable.embed_tokens);
  struct Lin {
    const char* module;
    int64_t out, in;
  };
  const Lin lins[] = {{"q_proj", q_dim, d}, {"k_proj", kv_dim, d}, {"v_proj", kv_dim, d},
                      {"o_proj", d, q_dim}, {"gate_proj", f, d},   {"up_proj", f, d},
                      {"down_proj", d, f}};
  int lora_layers = 0;
  for (int64_t l = 0; l < layers; ++l) {
    base(d, in.trainable.norms);
    base(d, in.trainable.norms);
    // Biases: q/k/v [H*hd], [Hkv*hd] x 2 (Qwen2, Llama attention_bias), o [D].
    if (c.qkv_bias) base(q_dim + 2 * kv_dim, in.trainable.bias);
    if (c.o_bias) base(d, in.trainable.bias);
    for (const Lin& lin : lins) {
      base(lin.out * lin.in, in.trainable.linear);
      if (in.lora && in.lora->targets_module(lin.module)) {
        trained += r * lin.in + lin.out * r;
        ++lora_layers;
      }
    }
  }
  base(d, in.trainable.norms);
  if (!c.tie_word_embeddings) base(v * d, in.trainable.linear);  // lm_head (tied: the embedding)

  MemoryPlan plan;
  auto parameter_item = [&](std::string name, int64_t bytes, std::string detail) {
    plan.items.push_back({std::move(name), bytes, std::move(detail)});
    plan.parameter_bytes += bytes;
  };
  const std::string act_name(dtype_name(bt.activation_dtype));
  parameter_item("frozen weights", frozen * act, fmt::format("{} elements, {}", frozen, act_name));
  parameter_item(
      "trained parameters", trained * (4 + (separate_value ? act : 0)),
      fmt::format("{} elements: fp32 master{}{}", trained,
                  separate_value ? " + " + act_name + " copy" : "",
                  in.lora ? fmt::format(", LoRA r {} on {} linears", r, lora_layers) : ""));
  parameter_item("gradients", trained * 4, "fp32, one per trained element");
  parameter_item("AdamW moments", trained * 8, "fp32 exp_avg and exp_avg_sq");

  // A training step (LlamaModel::forward_backward), phase by phase.
  LL_CHECK(in.offloaded_layers >= 0 && in.offloaded_layers < layers,
           "memory plan: {} offloaded layers of {} (at most {})", in.offloaded_layers, layers,
           layers - 1);
  LL_CHECK(in.tile_tokens >= 0, "memory plan: token tiles of {} rows", in.tile_tokens);
  const int64_t m = in.offloaded_layers;
  const int64_t t = in.tile_tokens <= 0 || in.tile_tokens >= n ? n : in.tile_tokens;
  plan.tile_tokens = t;
  plan.offloaded_layers = m;
  const int64_t nd = n * d * act;  // one [N, D] buffer
  // Block inputs in device buffers of their own at the end of the forward
  // (model/saved_block_inputs.h): all L without offload; with m offloaded, layers (m, L) and
  // two staging buffers, the final hidden state taking a staging buffer when m = L - 1.
  const int64_t own_inputs = m == 0 ? layers : layers - 1 - m;
  const int64_t staging = m == 0 ? 0 : 2;
  const bool final_own = m == 0 || m < layers - 1;
  const std::string shape_nd = fmt::format("[{}, {}] {}", n, d, act_name);
  const MemoryItem ids{"token ids", 8 * n, fmt::format("token and target ids [{}] int32", n)};
  const MemoryItem saved_inputs{
      "saved activations", own_inputs * nd,
      m == 0 ? fmt::format("{} block inputs {}", own_inputs, shape_nd)
             : fmt::format("{} block inputs {} on the device (layers {}-{}; layers 0-{} in host "
                           "memory, layer {} in a staging buffer)",
                           own_inputs, shape_nd, m + 1, layers - 1, m - 1, m)};
  const MemoryItem staging_item{
      "offload staging", staging * nd,
      fmt::format("2 x {}: the offloaded layers' inputs pass through them", shape_nd)};
  const MemoryItem final_item{"final hidden state", final_own ? nd : 0,
                              final_own ? shape_nd : "in a staging buffer"};
  const MemoryItem attention{
      "attention tensors", act * n * (2 * q_dim + 2 * kv_dim) + 4 * h * n,
      fmt::format("q, k, v, output [{}, {}|{}] {}, log-sum-exp [{}, {}] fp32", n, q_dim, kv_dim,
                  act_name, h, n)};
  const MemoryItem attention_grads{
      "attention gradients", act * n * (2 * q_dim + 2 * kv_dim),
      fmt::format("of q, k, v and the output [{}, {}|{}] {}", n, q_dim, kv_dim, act_name)};
  const std::string tile_name = t == n ? "whole" : fmt::format("tiles of {} tokens", t);
  const MemoryItem tiles_forward{"token tiles",
                                 act * (t * d + 3 * t * f + (in.lora ? 7 * t * r : 0)) + 4 * t,
                                 fmt::format("{}: normed input, gate/up/SwiGLU [{}, {}]{}, rstd",
                                             tile_name, t, f, in.lora ? ", LoRA x A^T" : "")};
  const MemoryItem tiles_backward{"token tile gradients",
                                  act * (2 * t * d + t * f + (in.lora ? t * r : 0)),
                                  fmt::format("{}: residual, normed-input and SwiGLU gradients{}",
                                              tile_name, in.lora ? ", LoRA scratch" : "")};
  const int64_t chunk = std::min(std::max<int64_t>(1, in.classifier_chunk), n);
  const MemoryItem classifier{
      "classifier chunk", chunk * v * 4,
      fmt::format("logits of {} tokens x {} vocab, fp32 (never the full [N, V])", chunk, v)};
  const MemoryItem final_norm{"final norm", 2 * nd + 4 * n,
                              fmt::format("its output and gradient {}, rstd", shape_nd)};
  const MemoryItem losses{"losses", 4 * n, fmt::format("[{}] fp32", n)};
  const MemoryItem residual_grad{"residual gradient", nd, shape_nd};
  std::vector<MemoryItem> attention_workspace;
  if (bt.kind == BackendKind::Cuda)
    attention_workspace.push_back(
        {"attention D", 4 * h * n, fmt::format("rowsum(dO * O) [{}, {}] fp32", h, n)});
  if (bt.attention_dq_accumulator())
    attention_workspace.push_back(
        {"attention dQ accum.", 4 * n * q_dim,
         fmt::format("[{}, {}] fp32: the atomic-dQ attention backward (--attention-kernel {})", n,
                     q_dim, attention_kernel_name(bt.attention_kernel))});
  std::vector<MemoryItem> fixed;
  if (bt.fixed_workspace_bytes > 0)
    fixed.push_back({"cuBLASLt workspace", bt.fixed_workspace_bytes, "GEMM algorithm scratch"});

  auto phase = [&](std::string name, std::vector<MemoryItem> items) {
    for (const MemoryItem& it : fixed) items.push_back(it);
    MemoryPhase p{std::move(name), 0, {}};
    for (MemoryItem& it : items) {
      if (it.bytes == 0) continue;
      p.bytes += it.bytes;
      p.items.push_back(std::move(it));
    }
    plan.phases.push_back(std::move(p));
  };
  phase("forward", {ids, saved_inputs, staging_item, final_item, attention, tiles_forward});
  phase("classifier",
        {ids, saved_inputs, staging_item, final_item, final_norm, losses, classifier});
  phase("final norm backward",
        {ids, saved_inputs, staging_item, final_item, final_norm, residual_grad});
  std::vector<MemoryItem> backward = {ids,       saved_inputs,    staging_item,  residual_grad,
                                      attention, attention_grads, tiles_forward, tiles_backward};
  for (const MemoryItem& it : attention_workspace) backward.push_back(it);
  phase("backward", backward);

  const MemoryPhase* peak = &plan.phases[0];
  for (const MemoryPhase& p : plan.phases)
    if (p.bytes > peak->bytes) peak = &p;
  plan.peak_phase = peak->name;
  plan.step_bytes = peak->bytes;
  for (const MemoryItem& it : peak->items) plan.items.push_back(it);
  plan.host_bytes = m * nd;
  return plan;
}

std::string format_memory_plan(const MemoryPlan& plan) {
  std::string out;
  for (const MemoryItem& it : plan.items) {
    out += fmt::format("  {:<22} {:>12}   {}\n", it.name, format_bytes(it.bytes), it.detail);
  }
  out += fmt::format(
      "  {:<22} {:>12}   parameters and optimizer state {}, one training step {} (at its {})\n",
      "total (peak)", format_bytes(plan.total()), format_bytes(plan.parameter_bytes),
      format_bytes(plan.step_bytes), plan.peak_phase);
  std::string phases;
  for (const MemoryPhase& p : plan.phases)
    phases += fmt::format("{}{} {}", phases.empty() ? "" : ", ", p.name, format_bytes(p.bytes));
  out += fmt::format("  {:<22} {:>12}   {}\n", "step phases", "", phases);
  out += fmt::format("  {:<22} {:>12}   {}\n", "host (pinned)", format_bytes(plan.host_bytes),
                     plan.offloaded_layers == 0
                         ? std::string("no activation offload")
                         : fmt::format("{} offloaded block inputs (layers 0-{})",
                                       plan.offloaded_layers, plan.offloaded_layers - 1));
  return out;
}

}  // namespace ll
