#include "model/formats/tensor_source.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "common/error.h"
#include "model/formats/bin_format.h"
#include "model/formats/hf_checkpoint.h"

namespace ll {

const MappedFile& TensorSource::keep(MappedFile file) {
  files_.push_back(std::make_unique<MappedFile>(std::move(file)));
  return *files_.back();
}

void TensorSource::add(TensorEntry entry) {
  auto it = entries_.find(entry.name);
  LL_CHECK(it == entries_.end(),
           "{}: duplicate tensor \"{}\": it is also in {}; a tensor must appear once in a model",
           entry.file, entry.name, it == entries_.end() ? "" : it->second.file);
  std::string name = entry.name;
  entries_.emplace(std::move(name), std::move(entry));
}

const TensorEntry* TensorSource::find(const std::string& name) const {
  auto it = entries_.find(name);
  return it == entries_.end() ? nullptr : &it->second;
}

std::unique_ptr<ModelFiles> open_model_files(const std::string& path) {
  struct stat st {};
  LL_CHECK(::stat(path.c_str(), &st) == 0,
           "{}: cannot open the model: {}; pass a Hugging Face model directory or a .bin made "
           "by ./convert",
           path, std::strerror(errno));
  if (S_ISDIR(st.st_mode)) return open_hf_checkpoint(path);
  LL_CHECK(S_ISREG(st.st_mode),
           "{}: not a model: neither a directory nor a regular file; pass a Hugging Face model "
           "directory or a .bin made by ./convert",
           path);
  if (file_has_bin_magic(path)) return open_model_bin(path);
  LL_CHECK(std::filesystem::path(path).extension() != ".safetensors",
           "{}: a single safetensors file has no config; pass the directory that holds it and "
           "its config.json",
           path);
  fail(
      "{}: not a model: bad magic (a .bin model starts with \"LLORABIN\"); pass a Hugging "
      "Face model directory or a .bin made by ./convert",
      path);
}

}  // namespace ll
