#include "model/formats/hf_checkpoint.h"

#include <filesystem>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "data/tokenizer_path.h"
#include "model/formats/json_header.h"
#include "model/formats/safetensors.h"

namespace ll {
namespace {

namespace fs = std::filesystem;

void add_all(ModelFiles& model, SafetensorsFile file) {
  std::vector<TensorEntry> tensors = std::move(file.tensors);
  model.tensors.keep(std::move(file.file));  // the mapping (and so entry data) stays put
  for (TensorEntry& t : tensors) model.tensors.add(std::move(t));
}

// shard file name -> the tensor names the index maps to it
std::map<std::string, std::set<std::string>> read_index(const std::string& index_path) {
  const MappedFile file(index_path);
  LL_CHECK(file.size() <= 100u * 1000u * 1000u,
           "{}: index is {} bytes, over the 100 MB limit; the file is damaged", index_path,
           file.size());
  const nlohmann::json doc =
      parse_json_header(file.data(), file.size(), index_path, "safetensors index");
  LL_CHECK(doc.is_object(), "{}: index must be a JSON object, found {}", index_path,
           doc.type_name());
  auto map = doc.find("weight_map");
  LL_CHECK(map != doc.end() && map->is_object(),
           "{}: index has no \"weight_map\" object (tensor name -> shard file)", index_path);
  std::map<std::string, std::set<std::string>> shards;
  for (const auto& [tensor, shard] : map->items()) {
    LL_CHECK(shard.is_string(), "{}: weight_map entry \"{}\" must name a shard file, found {}",
             index_path, tensor, shard.dump());
    const std::string name = shard.get<std::string>();
    // Shards live next to the index; a path that climbs out or is absolute is refused.
    LL_CHECK(
        !name.empty() && fs::path(name).filename() == fs::path(name) && name != "." && name != "..",
        "{}: weight_map entry \"{}\" names shard \"{}\", which is not a plain file name in "
        "the model directory",
        index_path, tensor, name);
    shards[name].insert(tensor);
  }
  LL_CHECK(!shards.empty(), "{}: weight_map is empty; the index lists no tensors", index_path);
  return shards;
}

void add_sharded(ModelFiles& model, const fs::path& dir, const std::string& index_path) {
  const auto shards = read_index(index_path);
  for (const auto& [shard_name, expected] : shards) {
    const std::string shard_path = (dir / shard_name).string();
    LL_CHECK(fs::is_regular_file(shard_path),
             "{}: shard {} is missing (the index maps {} tensors, e.g. \"{}\", to it); "
             "download it again",
             index_path, shard_path, expected.size(), *expected.begin());
    SafetensorsFile file = read_safetensors(shard_path);
    std::set<std::string> present;
    for (const TensorEntry& t : file.tensors) {
      LL_CHECK(expected.count(t.name) != 0,
               "{}: shard holds tensor \"{}\" which {} does not map to this shard; the index "
               "and shards disagree",
               shard_path, t.name, index_path);
      present.insert(t.name);
    }
    for (const std::string& name : expected) {
      LL_CHECK(present.count(name) != 0,
               "{}: missing tensor \"{}\" which {} maps to this shard; the index and shards "
               "disagree",
               shard_path, name, index_path);
    }
    add_all(model, std::move(file));
  }
}

}  // namespace

std::unique_ptr<ModelFiles> open_hf_checkpoint(const std::string& dir_str) {
  const fs::path dir(dir_str);
  LL_CHECK(fs::is_directory(dir), "{}: not a directory; pass a Hugging Face model directory",
           dir_str);
  auto model = std::make_unique<ModelFiles>();
  model->path = dir_str;
  model->config = llama_config_from_file((dir / "config.json").string());

  const fs::path single = dir / "model.safetensors";
  const fs::path index = dir / "model.safetensors.index.json";
  if (fs::exists(single)) {
    add_all(*model, read_safetensors(single.string()));
  } else if (fs::exists(index)) {
    add_sharded(*model, dir, index.string());
  } else {
    fail(
        "{}: no model.safetensors or model.safetensors.index.json in this directory "
        "(PyTorch .bin checkpoints are not read: save the model as safetensors first)",
        dir_str);
  }
  model->tokenizer_path = tokenizer_in_dir(dir_str);
  model->config_path = (dir / "config.json").string();
  return model;
}

}  // namespace ll
