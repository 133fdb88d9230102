#pragma once
// A Hugging Face model directory: config.json, the weights as model.safetensors or as shards
// listed by model.safetensors.index.json, and optionally tokenizer.model.
#include <memory>
#include <string>

#include "model/formats/tensor_source.h"

namespace ll {

// Opens and validates the directory. With both a single file and an index present, the
// single file wins (as in transformers). Every shard the index names must exist and hold
// exactly the tensors the index maps to it; shard names may not leave the directory.
// Throws ll::Error naming the directory or file and the fault.
std::unique_ptr<ModelFiles> open_hf_checkpoint(const std::string& dir);

}  // namespace ll
