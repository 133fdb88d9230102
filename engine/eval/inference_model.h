#pragma once
// Loading a model for inference (ppl_eval, generate, passkey): the base model, an optional
// adapter directory from train_longlora or PEFT, the backend, and the RoPE scaling and usable
// context, decided the same way by every tool:
//   rope: --rope-factor F when given (linear, factor F); else from --context-size C by
//     model/position_interpolation.h's rope_for_context (the model's own scaling when C is
//     within its context; else extended, of the type longlora.json records or the model's
//     own: linear ceil(C / max_pos) as LongLoRA's eval.py); else the adapter's longlora.json
//     scaling; else the model config's own rope_scaling.
//   context: --context-size when given; else longlora.json's training context; else the
//     context the scaling covers (kernels/rope_scaling.h: rope_context_length).
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "kernels/backend.h"
#include "model/formats/adapter_io.h"
#include "model/llama_config.h"
#include "model/llama_model.h"

namespace ll {

struct InferenceModelOptions {
  std::string model;  // HF directory or our .bin
  std::string lora;   // adapter directory ("" = none)
  std::string device = "auto";
  std::string attention_kernel = "auto";  // --attention-kernel (kernels/attention_kernel.h)
  int64_t context_size = 0;               // 0: not given
  double rope_factor = 0.0;               // --rope-factor (linear); 0: not given
};

struct InferenceModel {
  std::unique_ptr<Backend> backend;
  LlamaConfig config;
  std::optional<AdapterDir> adapter;
  std::unique_ptr<LlamaModel> model;  // on *backend, adapter applied
  RopeScaling rope;                   // what every forward applies
  int64_t context = 0;                // tokens the model is meant to handle
  std::string rope_source;            // where `rope` came from, for the tools' log line
};

// Throws ll::Error naming the file for a missing or damaged model, or an adapter that does
// not fit the model (shape or base-model name mismatch). before_weights (optional) runs once
// config, adapter, rope and context are known but before the backend starts and the
// weights load (minutes for 7B): the place for checks against the context or the vocabulary.
InferenceModel load_inference_model(
    const InferenceModelOptions& options,
    const std::function<void(const InferenceModel&)>& before_weights = {});

// The setup lines every inference tool prints (model, adapter, positions, backend).
std::string describe_inference_model(const InferenceModel& m, const InferenceModelOptions& o);

}  // namespace ll
