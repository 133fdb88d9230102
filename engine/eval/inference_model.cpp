#include "engine/eval/inference_model.h"

#include <cmath>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "common/error.h"
#include "kernels/make_backend.h"
#include "model/formats/tensor_source.h"
#include "model/llama_weights.h"
#include "model/position_interpolation.h"

namespace ll {

namespace {

// Decides the RoPE scaling and the context by the rules in the header.
void choose_positions(InferenceModel& m, const InferenceModelOptions& o) {
  const LlamaConfig& c = m.config;
  const LongLoraRecord* trained =
      m.adapter && m.adapter->longlora ? &*m.adapter->longlora : nullptr;
  if (o.rope_factor > 0.0) {
    m.rope = linear_rope_scaling(o.rope_factor);
    m.rope_source = "--rope-factor";
  } else if (o.context_size > 0) {
    // The type the adapter was trained with, when it records one.
    std::optional<RopeType> type;
    if (trained != nullptr && trained->rope.type != RopeType::Default) type = trained->rope.type;
    const RopeChoice choice =
        rope_for_context(c.rope_scaling, c.max_position_embeddings, o.context_size, type, 0.0);
    m.rope = choice.rope;
    m.rope_source = fmt::format("--context-size {}: {}", o.context_size, choice.source);
  } else if (trained != nullptr) {
    m.rope = trained->rope;
    m.rope_source =
        fmt::format("adapter's longlora.json (trained at {} tokens)", trained->context_length);
  } else {
    m.rope = c.rope_scaling;
    m.rope_source = "model config";
  }
  if (o.context_size > 0) {
    m.context = o.context_size;
  } else if (trained != nullptr) {
    m.context = trained->context_length;
  } else {
    m.context = rope_context_length(m.rope, c.max_position_embeddings);
  }
}

// The adapter's recorded base model, for messages ("" when PEFT recorded none).
std::string recorded_base(const AdapterDir& a) {
  return a.base_model.empty() ? std::string("no base model recorded")
                              : fmt::format("recorded base model {}", a.base_model);
}

}  // namespace

InferenceModel load_inference_model(
    const InferenceModelOptions& o,
    const std::function<void(const InferenceModel&)>& before_weights) {
  LL_CHECK(o.context_size >= 0, "--context-size must be positive, got {}", o.context_size);
  LL_CHECK(o.rope_factor == 0.0 || (std::isfinite(o.rope_factor) && o.rope_factor >= 1.0),
           "--rope-factor must be a number >= 1 (linear position interpolation), got {}",
           o.rope_factor);
  InferenceModel m;
  std::unique_ptr<ModelFiles> files = open_model_files(o.model);
  m.config = files->config;
  if (!o.lora.empty()) m.adapter = read_adapter_dir(o.lora);
  choose_positions(m, o);
  // A family without this head dim fails before the weights load.
  const AttentionKernel attention = parse_attention_kernel(o.attention_kernel);
  check_attention_kernel_head_dim(attention, m.config.head_dim());
  if (before_weights) before_weights(m);
  m.backend = make_backend(o.device, 0, attention);
  ModelSetup setup;
  if (m.adapter && !m.adapter->lora_tensors.empty()) setup.lora = m.adapter->lora;
  m.model = std::make_unique<LlamaModel>(*m.backend, load_llama_weights(*files), setup);
  files.reset();  // the weights are in backend memory now; unmap the files
  if (m.adapter) {
    try {
      m.model->load_adapter(*m.adapter);
    } catch (const Error& e) {
      // Names and shapes decide whether it fits; the recorded name only helps the user.
      fail("adapter {} does not fit model {} ({}): {}", o.lora, o.model, recorded_base(*m.adapter),
           e.what());
    }
  }
  return m;
}

std::string describe_inference_model(const InferenceModel& m, const InferenceModelOptions& o) {
  const LlamaConfig& c = m.config;
  std::string s =
      fmt::format("model          {} ({} layers, hidden {}, {} heads / {} kv, vocab {})\n", o.model,
                  c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.num_key_value_heads,
                  c.vocab_size);
  if (m.adapter) {
    const AdapterDir& a = *m.adapter;
    s += fmt::format(
        "adapter        {} (LoRA r {} alpha {} on {}; {} LoRA matrices, {} trained "
        "base tensors; {})\n",
        o.lora, a.lora.rank, a.lora.alpha, fmt::join(a.lora.targets, ","), a.lora_tensors.size(),
        a.trainable_params.size(), recorded_base(a));
  }
  s += fmt::format(
      "rope           {} (from {}; max_position_embeddings {}), context {} tokens, dense causal "
      "attention\n",
      describe_rope_scaling(m.rope), m.rope_source, c.max_position_embeddings, m.context);
  s += fmt::format("backend        {}\n", describe_backend(*m.backend));
  return s;
}

}  // namespace ll
