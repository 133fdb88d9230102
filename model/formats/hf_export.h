#pragma once
// Writing a Llama model as a Hugging Face directory that transformers (and every runtime that
// reads HF checkpoints) loads as LlamaForCausalLM:
//   config.json                      the base's config.json with every field the engine reads
//                                    replaced by llama_config_to_json of the model, with the
//                                    position interpolation it was trained with as "rope_scaling":
//                                    {"type": "linear", "factor": F} (the legacy two-key form:
//                                    transformers 4.3x accepts only that, later versions and
//                                    transformers 5 convert it), and "torch_dtype".
//                                    max_position_embeddings stays the base model's, as LongLoRA's
//                                    eval.py / inference.py expect (they derive the factor as
//                                    ceil(context / max_position_embeddings)).
//   model.safetensors                every tensor, when they fit in max_shard_bytes; otherwise
//   model-00001-of-0000K.safetensors shards filled in tensor order (a shard is closed when the
//   model.safetensors.index.json     next tensor would overflow it), and the index
//                                    {"metadata": {"total_size": bytes}, "weight_map": {...}},
//                                    as transformers' save_pretrained writes them
//   tokenizer.json or tokenizer.model copied, with the tokenizer_config.json and
//                                    special_tokens_map.json beside it (when present), and the
//                                    base's generation_config.json
// The directory is built under a temporary name next to `dir`, every file flushed, then renamed
// into place: a killed export never leaves a half-written model under `dir`.
#include <cstdint>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "model/llama_weights.h"

namespace ll {

struct HfExportOptions {
  RopeScaling rope;            // config.json rope_scaling (kernels/rope_scaling.h)
  std::string tokenizer_path;  // tokenizer.json or tokenizer.model to copy (required), with the
                               // tokenizer_config.json / special_tokens_map.json beside it
  // The base's config.json (a Hugging Face base; "" for our .bin): every field of it the engine
  // does not set (initializer_range, layer_types, max_window_layers, ...) is kept as it was.
  std::string base_config_path;
  std::string generation_config_path;        // copied when not empty (eos lists, defaults)
  uint64_t max_shard_bytes = 5000000000ull;  // transformers' "5GB"
  DType dtype = DType::BF16;                 // F32, F16 or BF16
};

struct HfExportSummary {
  std::vector<std::string> files;  // the names written inside the directory
  uint64_t weight_bytes = 0;       // total tensor bytes (the index's total_size)
  int shards = 0;                  // safetensors files
};

// Writes `weights` (lm_head omitted when tie_word_embeddings) into `dir`. `dir` may be absent,
// empty, or a previous export (only the file names above), which is replaced; anything else
// is refused. Throws ll::Error for a missing tokenizer ("missing tokenizer.model"), a factor
// below 1, a dtype other than F32/F16/BF16, or a value that is not finite in the target dtype
// (F16 overflow), naming the tensor; nothing is left behind under `dir` then.
HfExportSummary write_hf_model_dir(const std::string& dir, const LlamaWeights& weights,
                                   const HfExportOptions& options);

// "5GB" -> 5e9, "500MB", "64KB", "2GiB" -> 2^31, "123" (bytes), as transformers' max_shard_size
// (decimal units for KB/MB/GB, binary for KiB/MiB/GiB). Throws ll::Error for anything else or 0.
uint64_t parse_byte_size(const std::string& text);

}  // namespace ll
