#pragma once
// Named tensors backed by memory-mapped files: what a Hugging Face directory
// (one or several *.safetensors) and our .bin format both turn into.
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "common/mapped_file.h"
#include "model/llama_config.h"

namespace ll {

struct TensorEntry {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // inside a mapped file owned by the TensorSource
  size_t nbytes = 0;
  std::string file;  // for error messages

  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
};

class TensorSource {
 public:
  // Keeps the file mapped for as long as the source lives; returns its index.
  const MappedFile& keep(MappedFile file);
  // Throws ll::Error if the name already exists (the same tensor in two shards).
  void add(TensorEntry entry);
  const TensorEntry* find(const std::string& name) const;
  const std::map<std::string, TensorEntry>& entries() const { return entries_; }

 private:
  std::vector<std::unique_ptr<MappedFile>> files_;
  std::map<std::string, TensorEntry> entries_;
};

// A model on disk: its config and its tensors, whichever format they came from.
struct ModelFiles {
  LlamaConfig config;
  TensorSource tensors;
  std::string path;  // the directory or .bin path given by the user
  // The tokenizer next to the weights (tokenizer.json, else tokenizer.model), "" when absent.
  std::string tokenizer_path;
  // A Hugging Face directory's config.json ("" for our .bin): export_hf keeps its other fields.
  std::string config_path;
};

// Open a Hugging Face model directory (config.json + model.safetensors or
// model.safetensors.index.json + shards) or one of our .bin files, chosen by what `path` is.
// Every structural rule is validated (see model/formats/safetensors.h, model/formats/bin_format.h).
std::unique_ptr<ModelFiles> open_model_files(const std::string& path);

}  // namespace ll
