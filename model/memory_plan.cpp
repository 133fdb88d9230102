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
  auto item = [&](std::string name, int64_t bytes, std::string detail, bool parameter) {
    plan.items.push_back({std::move(name), bytes, std::move(detail)});
    (parameter ? plan.parameter_bytes : plan.step_bytes) += bytes;
  };
  const std::string act_name(dtype_name(bt.activation_dtype));
  item("frozen weights", frozen * act, fmt::format("{} elements, {}", frozen, act_name), true);
  item("trained parameters", trained * (4 + (separate_value ? act : 0)),
       fmt::format("{} elements: fp32 master{}{}", trained,
                   separate_value ? " + " + act_name + " copy" : "",
                   in.lora ? fmt::format(", LoRA r {} on {} linears", r, lora_layers) : ""),
       true);
  item("gradients", trained * 4, "fp32, one per trained element", true);
  item("AdamW moments", trained * 8, "fp32 exp_avg and exp_avg_sq", true);

  // A training step (forward_backward): the block inputs saved for recomputation, one
  // block's recomputed intermediates, the backward's scratch, the classifier chunk.
  item("saved activations", layers * n * d * act,
       fmt::format("{} block inputs [{}, {}] {}", layers, n, d, act_name), false);
  const int64_t workspace =
      act * (4 * n * d + 2 * n * q_dim + 2 * n * kv_dim + 3 * n * f + (in.lora ? 7 * n * r : 0)) +
      4 * (2 * n + h * n);
  item("recompute workspace", workspace,
       "one block: normed inputs, q/k/v, attention out, MLP, LoRA x A^T, rstd, lse", false);
  const int64_t scratch =
      act * (2 * n * d + n * f + 2 * n * q_dim + 2 * n * kv_dim + (in.lora ? n * r : 0)) +
      4 * (2 * n + 2 * n);
  item("backward scratch", scratch,
       "gradients of the residual stream and of one block's intermediates, token ids, losses",
       false);
  if (bt.attention_dq_accumulator())
    item("attention dQ accum.", 4 * n * q_dim,
         fmt::format("[{}, {}] fp32: the atomic-dQ attention backward (--attention-kernel {})", n,
                     q_dim, attention_kernel_name(bt.attention_kernel)),
         false);
  const int64_t chunk = std::min(std::max<int64_t>(1, in.classifier_chunk), n);
  item("classifier chunk", chunk * v * 4,
       fmt::format("logits of {} tokens x {} vocab, fp32 (never the full [N, V])", chunk, v),
       false);
  if (bt.fixed_workspace_bytes > 0)
    item("cuBLASLt workspace", bt.fixed_workspace_bytes, "GEMM algorithm scratch", false);
  return plan;
}

std::string format_memory_plan(const MemoryPlan& plan) {
  std::string out;
  for (const MemoryItem& it : plan.items) {
    out += fmt::format("  {:<22} {:>12}   {}\n", it.name, format_bytes(it.bytes), it.detail);
  }
  out += fmt::format("  {:<22} {:>12}   parameters and optimizer state {}, one training step {}\n",
                     "total (peak)", format_bytes(plan.total()), format_bytes(plan.parameter_bytes),
                     format_bytes(plan.step_bytes));
  return out;
}

}  // namespace ll
