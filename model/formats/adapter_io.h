#pragma once
// A trained adapter directory, readable by PEFT and by LongLoRA's own scripts:
//   adapter_model.safetensors    LoRA tensors under PEFT's names, e.g.
//                                base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight
//                                ([r, in]) and ...lora_B.weight ([out, r]), fp32
//   adapter_config.json          PEFT's LoraConfig: peft_type "LORA", task_type "CAUSAL_LM",
//                                r, lora_alpha, lora_dropout 0, target_modules, bias "none",
//                                base_model_name_or_path, fan_in_fan_out false, ...
//   trainable_params.safetensors the trained base tensors ("LoRA+": embed_tokens, norms)
//                                under their HF names, e.g. model.embed_tokens.weight, fp32
//   longlora.json                what PEFT has no place for: the position interpolation the
//                                adapter was trained with, {"format": "longlora-adapter",
//                                "version": 1, "rope_scaling": {"type": "linear", "factor": F},
//                                "context_length": N}. PEFT ignores the file; without it a merged
//                                model would run at factor 1 and produce garbage past the base
//                                context. Optional on reading (PEFT's own adapters lack it).
// Each file is written to a temporary name, flushed and renamed.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "kernels/rope_scaling.h"
#include "model/lora_config.h"

namespace ll {

// PEFT's key of a LoRA matrix: layer i, module "q_proj" (self_attn) or "gate_proj" (mlp),
// which "A" or "B".
std::string peft_lora_key(int64_t layer, const std::string& module, char which);
// Inverse of peft_lora_key; also accepts PEFT's older keys that carry the adapter name
// (".lora_A.default.weight"). Returns false for a key that is not a LoRA matrix.
bool parse_peft_lora_key(const std::string& key, int64_t* layer, std::string* module, char* which);

struct HostTensor {
  std::vector<int64_t> shape;
  std::vector<float> values;  // row-major, numel(shape) elements
};

// The LongLoRA training context of an adapter (longlora.json, docs/formats/longlora-json.md).
struct LongLoraRecord {
  RopeScaling rope;            // the RoPE scaling the run applied (version 1 files: linear)
  int64_t context_length = 0;  // the training length N (-ctx), >= 1
};

struct AdapterDir {
  LoraConfig lora;
  std::string base_model;                              // base_model_name_or_path
  std::map<std::string, HostTensor> lora_tensors;      // PEFT keys as peft_lora_key writes them
  std::map<std::string, HostTensor> trainable_params;  // HF names (a "base_model.model." prefix
                                                       // in the file is stripped on reading)
  std::optional<LongLoraRecord> longlora;              // longlora.json, when present
};

// Writes the files into `dir` (created if missing). trainable_params may be empty (then
// trainable_params.safetensors is not written); so may longlora (then longlora.json is not
// written, and a stale one is removed).
void write_adapter_dir(const std::string& dir, const AdapterDir& adapter);

// Reads an adapter directory of ours or PEFT's. Errors (ll::Error, naming the file): missing
// adapter_config.json or adapter_model.safetensors (adapter_model.bin is not supported: the
// message says to convert it with safetensors), peft_type other than LORA, lora_dropout
// ignored, use_rslora / use_dora / fan_in_fan_out true (unsupported), a key that is not a LoRA
// matrix, a module outside target_modules, an A without its B, a rank that disagrees with r.
// trainable_params.safetensors is optional; so is longlora.json, which is checked (format,
// version 1, rope_scaling type linear with a finite factor >= 1, context_length >= 1).
AdapterDir read_adapter_dir(const std::string& dir);

}  // namespace ll
