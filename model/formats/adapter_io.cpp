#include "model/formats/adapter_io.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/atomic_file.h"
#include "common/error.h"
#include "model/formats/json_header.h"
#include "model/formats/safetensors.h"

namespace ll {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr const char* kConfigFile = "adapter_config.json";
constexpr const char* kLoraFile = "adapter_model.safetensors";
constexpr const char* kTrainableFile = "trainable_params.safetensors";
constexpr const char* kLongLoraFile = "longlora.json";
constexpr const char* kLongLoraFormat = "longlora-adapter";
constexpr int64_t kLongLoraVersion = 2;  // 2: any RoPE scaling type (1: linear only)
constexpr const char* kPeftPrefix = "base_model.model.";  // PeftModel + LlamaForCausalLM
constexpr const char* kLayersPrefix = "base_model.model.model.layers.";
constexpr size_t kMaxConfigBytes = 16u << 20;  // far above any real adapter_config.json

// The submodule of a Llama block holding `module`, or nullptr for a name that is not a LoRA
// target.
const char* block_part(const std::string& module) {
  if (module == "q_proj" || module == "k_proj" || module == "v_proj" || module == "o_proj") {
    return "self_attn";
  }
  if (module == "gate_proj" || module == "up_proj" || module == "down_proj") return "mlp";
  return nullptr;
}

std::string join(const std::string& dir, const char* name) {
  return (fs::path(dir) / name).string();
}

std::string shape_str(const std::vector<int64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

// The element count of `shape`, or -1 for a negative dimension.
int64_t numel_of(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) return -1;
    n *= d;
  }
  return n;
}

// The first non-finite element of `values`, or -1.
int64_t first_non_finite(const std::vector<float>& values) {
  for (size_t i = 0; i < values.size(); ++i) {
    if (!std::isfinite(values[i])) return int64_t(i);
  }
  return -1;
}

// A tensor we are about to write: values match the shape and are finite.
void check_tensor_to_write(const std::string& where, const std::string& name, const HostTensor& t) {
  const int64_t n = numel_of(t.shape);
  LL_CHECK(n >= 0 && size_t(n) == t.values.size(), "{}: tensor \"{}\" has shape {} but {} values",
           where, name, shape_str(t.shape), t.values.size());
  const int64_t bad = first_non_finite(t.values);
  LL_CHECK(bad < 0, "{}: tensor \"{}\" element {} is {}; refusing to save a diverged model", where,
           name, bad, bad < 0 ? 0.0f : t.values[size_t(bad)]);
}

// Reads a floating tensor as fp32 and rejects NaN/Inf, naming the file and the tensor.
HostTensor read_checked(const SafetensorsFile& file, const TensorEntry& entry) {
  HostTensor t;
  t.shape = entry.shape;
  t.values = file.read_f32(entry.name);
  const int64_t bad = first_non_finite(t.values);
  LL_CHECK(bad < 0,
           "{}: tensor \"{}\" element {} is {}; the adapter is damaged or its training "
           "diverged",
           file.file.path(), entry.name, bad, bad < 0 ? 0.0f : t.values[size_t(bad)]);
  return t;
}

// Every key a LoRA matrix of a target module; A [r, in] paired with B [out, r]; each module the
// same shape in every layer; and every target module adapted in every layer of `layers`
// (default: 0 .. the highest layer present). `where` starts every message.
void check_lora_tensors(const std::string& where, const LoraConfig& lora,
                        const std::map<std::string, HostTensor>& tensors,
                        const std::optional<std::set<int64_t>>& layers) {
  LL_CHECK(!tensors.empty(), "{}: holds no LoRA matrices", where);
  struct Pair {
    const HostTensor* a = nullptr;
    const HostTensor* b = nullptr;
  };
  std::map<std::pair<int64_t, std::string>, Pair> pairs;
  for (const auto& [key, t] : tensors) {
    int64_t layer = 0;
    std::string module;
    char which = 0;
    LL_CHECK(parse_peft_lora_key(key, &layer, &module, &which),
             "{}: tensor \"{}\" is not a LoRA matrix (expected names like {})", where, key,
             peft_lora_key(0, "q_proj", 'A'));
    LL_CHECK(lora.targets_module(module),
             "{}: tensor \"{}\" adapts {}, which is not in target_modules [{}]", where, key, module,
             fmt::join(lora.targets, ", "));
    LL_CHECK(!layers || layers->count(layer),
             "{}: tensor \"{}\" adapts layer {}, which is not in "
             "layers_to_transform",
             where, key, layer);
    LL_CHECK(t.shape.size() == 2, "{}: tensor \"{}\" has shape {}; a LoRA matrix is 2-D", where,
             key, shape_str(t.shape));
    Pair& p = pairs[{layer, module}];
    (which == 'A' ? p.a : p.b) = &t;
  }
  std::map<std::string, std::pair<std::vector<int64_t>, std::vector<int64_t>>> module_shapes;
  for (const auto& [id, p] : pairs) {
    const auto& [layer, module] = id;
    const std::string a_key = peft_lora_key(layer, module, 'A');
    const std::string b_key = peft_lora_key(layer, module, 'B');
    LL_CHECK(p.a != nullptr, "{}: \"{}\" has no matching \"{}\"", where, b_key, a_key);
    LL_CHECK(p.b != nullptr, "{}: \"{}\" has no matching \"{}\"", where, a_key, b_key);
    LL_CHECK(p.a->shape[0] == lora.rank,
             "{}: tensor \"{}\" has shape {}, rank {} disagrees with r = {}", where, a_key,
             shape_str(p.a->shape), p.a->shape[0], lora.rank);
    LL_CHECK(p.b->shape[1] == lora.rank,
             "{}: tensor \"{}\" has shape {}, rank {} disagrees with r = {}", where, b_key,
             shape_str(p.b->shape), p.b->shape[1], lora.rank);
    LL_CHECK(p.a->shape[1] >= 1 && p.b->shape[0] >= 1,
             "{}: \"{}\" {} / \"{}\" {} have an empty dimension", where, a_key,
             shape_str(p.a->shape), b_key, shape_str(p.b->shape));
    auto [it, fresh] = module_shapes.try_emplace(module, p.a->shape, p.b->shape);
    LL_CHECK(fresh || (it->second.first == p.a->shape && it->second.second == p.b->shape),
             "{}: {} of layer {} has shapes {} / {} but an earlier layer has {} / {}", where,
             module, layer, shape_str(p.a->shape), shape_str(p.b->shape),
             shape_str(it->second.first), shape_str(it->second.second));
  }
  auto require_layer = [&](int64_t layer) {
    for (const std::string& module : lora.targets) {
      LL_CHECK(pairs.count({layer, module}), "{}: layer {} has no {} adapter (\"{}\" missing)",
               where, layer, module, peft_lora_key(layer, module, 'A'));
    }
  };
  if (layers) {
    for (int64_t layer : *layers) require_layer(layer);
  } else {
    // Stops at the first gap, so a hostile layer index cannot make this loop long.
    for (int64_t i = 0; i <= pairs.rbegin()->first.first; ++i) require_layer(i);
  }
}

std::string read_text_file(const std::string& path) {
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  LL_CHECK(!ec, "{}: cannot read: {}", path, ec.message());
  LL_CHECK(size <= kMaxConfigBytes,
           "{}: {} bytes is too large for a config file; the file is "
           "damaged or not an adapter config",
           path, size);
  std::ifstream in(path, std::ios::binary);
  std::string text(size, '\0');
  in.read(text.data(), std::streamsize(size));
  LL_CHECK(in.good() || (size == 0 && !in.bad()), "{}: cannot read: {}", path,
           std::strerror(errno));
  return text;
}

// A boolean option PEFT may write; `true` means a feature we do not implement.
void reject_true(const json& config, const std::string& path, const char* key, const char* what) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return;
  LL_CHECK(it->is_boolean(), "{}: \"{}\" must be true or false, found {}", path, key, it->dump());
  LL_CHECK(!it->get<bool>(), "{}: \"{}\" is true: {} is not supported; train a plain LoRA adapter",
           path, key, what);
}

struct ParsedConfig {
  LoraConfig lora;
  std::string base_model;
  std::optional<std::set<int64_t>> layers;  // layers_to_transform, when given
};

ParsedConfig parse_adapter_config(const std::string& path) {
  const std::string text = read_text_file(path);
  const json config = parse_json_header(reinterpret_cast<const uint8_t*>(text.data()), text.size(),
                                        path, "adapter config");
  LL_CHECK(config.is_object(), "{}: must be a JSON object, found {}", path, config.type_name());
  ParsedConfig out;

  auto peft_type = config.find("peft_type");
  LL_CHECK(peft_type != config.end() && peft_type->is_string(),
           "{}: no \"peft_type\"; this is not a PEFT adapter config", path);
  LL_CHECK(*peft_type == "LORA", "{}: peft_type is \"{}\"; only LORA adapters are supported", path,
           peft_type->get<std::string>());

  auto r = config.find("r");
  LL_CHECK(r != config.end() && r->is_number_integer(),
           "{}: \"r\" (the LoRA rank) must be an "
           "integer, found {}",
           path, r == config.end() ? "nothing" : r->dump());
  LL_CHECK(r->is_number_unsigned() && r->get<uint64_t>() >= 1 && r->get<uint64_t>() <= (1u << 20),
           "{}: \"r\" = {} is not a valid LoRA rank", path, r->dump());
  out.lora.rank = int64_t(r->get<uint64_t>());

  out.lora.alpha = 8.0;  // PEFT's default when the key is absent
  if (auto alpha = config.find("lora_alpha"); alpha != config.end()) {
    LL_CHECK(alpha->is_number(), "{}: \"lora_alpha\" must be a number, found {}", path,
             alpha->dump());
    out.lora.alpha = alpha->get<double>();
  }

  auto targets = config.find("target_modules");
  LL_CHECK(targets != config.end() && !targets->is_null(), "{}: no \"target_modules\"", path);
  if (targets->is_string()) {
    LL_CHECK(*targets == "all-linear",
             "{}: target_modules \"{}\" is a regular expression, which "
             "is not supported; list the module names",
             path, targets->get<std::string>());
    out.lora.targets = lora_target_names();
  } else {
    LL_CHECK(targets->is_array(),
             "{}: \"target_modules\" must be a list of module names, found "
             "{}",
             path, targets->dump());
    out.lora.targets.clear();
    for (const json& t : *targets) {
      LL_CHECK(t.is_string(), "{}: target_modules entry {} is not a module name", path, t.dump());
      out.lora.targets.push_back(t.get<std::string>());
    }
  }
  try {
    out.lora.validate();
  } catch (const Error& e) {
    fail("{}: {}", path, e.what());
  }

  reject_true(config, path, "use_rslora", "rank-stabilised LoRA (scaling alpha / sqrt(r))");
  reject_true(config, path, "use_dora", "DoRA");
  reject_true(config, path, "fan_in_fan_out", "a transposed (Conv1D) base layer");
  reject_true(config, path, "lora_bias", "a LoRA bias");
  for (const char* key : {"rank_pattern", "alpha_pattern"}) {
    auto it = config.find(key);
    LL_CHECK(it == config.end() || it->is_null() || (it->is_object() && it->empty()),
             "{}: \"{}\" {} is not supported; every module must use r and lora_alpha", path, key,
             it == config.end() ? "" : it->dump());
  }
  // lora_dropout only matters while training that adapter; it is ignored.

  if (auto layers = config.find("layers_to_transform");
      layers != config.end() && !layers->is_null()) {
    std::set<int64_t> set;
    const json list = layers->is_array() ? *layers : json::array({*layers});
    for (const json& l : list) {
      LL_CHECK(l.is_number_unsigned(), "{}: layers_to_transform entry {} is not a layer index",
               path, l.dump());
      set.insert(int64_t(std::min<uint64_t>(l.get<uint64_t>(), 1u << 30)));
    }
    out.layers = std::move(set);
  }

  if (auto base = config.find("base_model_name_or_path"); base != config.end()) {
    LL_CHECK(base->is_string() || base->is_null(),
             "{}: \"base_model_name_or_path\" must be a "
             "string, found {}",
             path, base->dump());
    if (base->is_string()) out.base_model = base->get<std::string>();
  }
  return out;
}

json adapter_config_json(const AdapterDir& adapter) {
  const LoraConfig& lora = adapter.lora;
  json alpha = lora.alpha;
  if (lora.alpha == std::floor(lora.alpha) && std::fabs(lora.alpha) < 1e15) {
    alpha = int64_t(lora.alpha);  // PEFT writes integers; keep that look when exact
  }
  // What PEFT's LoraConfig.save_pretrained writes for a plain LoRA adapter (keys sorted, as
  // json.dumps(sort_keys=True) does); absent keys take PEFT's defaults when it loads.
  return json{
      {"alpha_pattern", json::object()},
      {"base_model_name_or_path",
       adapter.base_model.empty() ? json(nullptr) : json(adapter.base_model)},
      {"bias", "none"},
      {"fan_in_fan_out", false},
      {"inference_mode", true},
      {"init_lora_weights", true},
      {"layers_pattern", nullptr},
      {"layers_to_transform", nullptr},
      {"lora_alpha", alpha},
      {"lora_dropout", 0.0},
      {"modules_to_save", nullptr},
      {"peft_type", "LORA"},
      {"r", lora.rank},
      {"rank_pattern", json::object()},
      {"revision", nullptr},
      {"target_modules", lora.targets},
      {"task_type", "CAUSAL_LM"},
      {"use_dora", false},
      {"use_rslora", false},
  };
}

json longlora_json(const LongLoraRecord& r) {
  return json{{"format", kLongLoraFormat},
              {"version", kLongLoraVersion},
              {"rope_scaling", rope_scaling_to_json(r.rope)},
              {"context_length", r.context_length}};
}

void check_longlora_record(const std::string& where, const LongLoraRecord& r) {
  validate_rope_scaling(r.rope, where + ": rope_scaling");
  LL_CHECK(r.context_length >= 1, "{}: context_length {} must be at least 1", where,
           r.context_length);
}

LongLoraRecord parse_longlora_json(const std::string& path) {
  const std::string text = read_text_file(path);
  const json doc = parse_json_header(reinterpret_cast<const uint8_t*>(text.data()), text.size(),
                                     path, "LongLoRA adapter record");
  LL_CHECK(doc.is_object(), "{}: must be a JSON object, found {}", path, doc.type_name());
  auto format = doc.find("format");
  LL_CHECK(format != doc.end() && *format == kLongLoraFormat,
           "{}: \"format\" must be \"{}\", found {}; not a LongLoRA adapter record", path,
           kLongLoraFormat, format == doc.end() ? "nothing" : format->dump());
  auto version = doc.find("version");
  LL_CHECK(version != doc.end() && version->is_number_integer(),
           "{}: \"version\" must be an integer, found {}", path,
           version == doc.end() ? "nothing" : version->dump());
  LL_CHECK(*version == 1 || *version == kLongLoraVersion,
           "{}: version {} is not supported (this engine reads versions 1 to {}); a newer engine "
           "wrote it",
           path, version->dump(), kLongLoraVersion);
  LongLoraRecord r;
  auto scaling = doc.find("rope_scaling");
  if (*version == 1) {
    // Version 1 recorded linear position interpolation only: {"type": "linear", "factor": f}.
    LL_CHECK(scaling != doc.end() && scaling->is_object(),
             "{}: \"rope_scaling\" must be an object {{\"type\": \"linear\", \"factor\": f}}, "
             "found {}",
             path, scaling == doc.end() ? "nothing" : scaling->dump());
    auto type = scaling->find("type");
    LL_CHECK(type != scaling->end() && *type == "linear",
             "{}: rope_scaling type {} is not supported in version 1; only \"linear\" is", path,
             type == scaling->end() ? "nothing" : type->dump());
    auto factor = scaling->find("factor");
    LL_CHECK(factor != scaling->end() && factor->is_number(),
             "{}: rope_scaling.factor must be a number, found {}", path,
             factor == scaling->end() ? "nothing" : factor->dump());
    r.rope = linear_rope_scaling(factor->get<double>());
  } else {
    // Version 2: any type, as kernels/rope_scaling.h writes it (null: no scaling).
    LL_CHECK(scaling != doc.end(), "{}: \"rope_scaling\" is missing (null or an object)", path);
    if (!scaling->is_null()) r.rope = rope_scaling_from_json(*scaling, 0, path + ": rope_scaling");
  }
  auto context = doc.find("context_length");
  LL_CHECK(context != doc.end() && context->is_number_integer(),
           "{}: \"context_length\" must be an integer, found {}", path,
           context == doc.end() ? "nothing" : context->dump());
  r.context_length = context->is_number_unsigned()
                         ? int64_t(std::min<uint64_t>(context->get<uint64_t>(), INT64_MAX))
                         : context->get<int64_t>();
  check_longlora_record(path, r);
  return r;
}

std::vector<SafetensorsTensor> views(const std::map<std::string, HostTensor>& tensors) {
  std::vector<SafetensorsTensor> out;
  out.reserve(tensors.size());
  for (const auto& [name, t] : tensors) {
    out.push_back({name, DType::F32, t.shape, t.values.data()});
  }
  return out;
}

}  // namespace

std::string peft_lora_key(int64_t layer, const std::string& module, char which) {
  const char* part = block_part(module);
  LL_CHECK(part != nullptr, "\"{}\" is not a LoRA target module; choose from {}", module,
           fmt::join(lora_target_names(), ", "));
  LL_CHECK(layer >= 0, "LoRA key for a negative layer index {}", layer);
  LL_CHECK(which == 'A' || which == 'B', "LoRA matrix must be A or B, got '{}'", which);
  return fmt::format("{}{}.{}.{}.lora_{}.weight", kLayersPrefix, layer, part, module, which);
}

bool parse_peft_lora_key(const std::string& key, int64_t* layer, std::string* module, char* which) {
  const std::string prefix = kLayersPrefix;
  if (key.compare(0, prefix.size(), prefix) != 0) return false;
  size_t pos = prefix.size();
  // Layer index: decimal, no sign, no leading zero (so the key formats back identically).
  const size_t digits_end = key.find_first_not_of("0123456789", pos);
  if (digits_end == std::string::npos || digits_end == pos || digits_end - pos > 9) return false;
  if (key[pos] == '0' && digits_end - pos > 1) return false;
  const int64_t index = std::stoll(key.substr(pos, digits_end - pos));
  pos = digits_end;
  if (key[pos] != '.') return false;
  ++pos;
  // <part>.<module>.lora_<X>[.default].weight
  const size_t part_end = key.find('.', pos);
  if (part_end == std::string::npos) return false;
  const std::string part = key.substr(pos, part_end - pos);
  const size_t module_end = key.find('.', part_end + 1);
  if (module_end == std::string::npos) return false;
  const std::string name = key.substr(part_end + 1, module_end - part_end - 1);
  const char* expected_part = block_part(name);
  if (expected_part == nullptr || part != expected_part) return false;
  const std::string rest = key.substr(module_end);
  char matrix = 0;
  if (rest == ".lora_A.weight" || rest == ".lora_A.default.weight") {
    matrix = 'A';
  } else if (rest == ".lora_B.weight" || rest == ".lora_B.default.weight") {
    matrix = 'B';
  } else {
    return false;
  }
  if (layer) *layer = index;
  if (module) *module = name;
  if (which) *which = matrix;
  return true;
}

void write_adapter_dir(const std::string& dir, const AdapterDir& adapter) {
  const std::string where = fmt::format("cannot write adapter {}", dir);
  // No LoRA matrices: full training (e.g. pretraining); only trainable_params is written.
  const bool has_lora = !adapter.lora_tensors.empty();
  LL_CHECK(has_lora || !adapter.trainable_params.empty(), "{}: nothing to write", where);
  if (has_lora) {
    try {
      adapter.lora.validate();
    } catch (const Error& e) {
      fail("{}: {}", where, e.what());
    }
    for (const auto& [key, t] : adapter.lora_tensors) check_tensor_to_write(where, key, t);
    check_lora_tensors(where, adapter.lora, adapter.lora_tensors, std::nullopt);
  }
  for (const auto& [name, t] : adapter.trainable_params) {
    LL_CHECK(!name.empty() && name.rfind(kPeftPrefix, 0) != 0 &&
                 !parse_peft_lora_key(name, nullptr, nullptr, nullptr),
             "{}: trainable parameter \"{}\" must be named as in the base model (e.g. "
             "model.embed_tokens.weight)",
             where, name);
    check_tensor_to_write(where, name, t);
  }
  if (adapter.longlora) check_longlora_record(where, *adapter.longlora);

  std::error_code ec;
  fs::create_directories(dir, ec);
  LL_CHECK(!ec, "{}: cannot create the directory: {}", dir, ec.message());
  const std::map<std::string, std::string> metadata = {{"format", "pt"}};
  if (has_lora) {
    write_safetensors(join(dir, kLoraFile), views(adapter.lora_tensors), metadata);
  } else {
    // Stale LoRA files from an earlier save would be read back as this run's.
    for (const char* stale : {kLoraFile, kConfigFile}) {
      fs::remove(join(dir, stale), ec);
      LL_CHECK(!ec, "{}: cannot remove: {}", join(dir, stale), ec.message());
    }
  }
  const std::string trainable_path = join(dir, kTrainableFile);
  if (!adapter.trainable_params.empty()) {
    write_safetensors(trainable_path, views(adapter.trainable_params), metadata);
  } else {
    // A stale file from an earlier save would be read back as this adapter's.
    fs::remove(trainable_path, ec);
    LL_CHECK(!ec, "{}: cannot remove: {}", trainable_path, ec.message());
  }
  if (has_lora) {
    const std::string text = adapter_config_json(adapter).dump(2) + "\n";
    AtomicFileWriter config(join(dir, kConfigFile));
    config.write(text.data(), text.size());
    config.commit();
  }
  const std::string longlora_path = join(dir, kLongLoraFile);
  if (adapter.longlora) {
    const std::string text = longlora_json(*adapter.longlora).dump(2) + "\n";
    AtomicFileWriter record(longlora_path);
    record.write(text.data(), text.size());
    record.commit();
  } else {
    // A stale record would give this adapter another run's position interpolation.
    fs::remove(longlora_path, ec);
    LL_CHECK(!ec, "{}: cannot remove: {}", longlora_path, ec.message());
  }
  fsync_directory(dir);
}

// trainable_params.safetensors into out.trainable_params (a "base_model.model." prefix is
// dropped).
static void read_trainable_params(const std::string& trainable_path, AdapterDir& out) {
  const SafetensorsFile file = read_safetensors(trainable_path);
  const std::string prefix = kPeftPrefix;
  for (const TensorEntry& entry : file.tensors) {
    std::string name = entry.name;
    if (name.rfind(prefix, 0) == 0) name = name.substr(prefix.size());
    LL_CHECK(!name.empty() && !parse_peft_lora_key(prefix + name, nullptr, nullptr, nullptr),
             "{}: tensor \"{}\" is not a base-model parameter", trainable_path, entry.name);
    LL_CHECK(!out.trainable_params.count(name),
             "{}: tensor \"{}\" appears twice (with and "
             "without the \"{}\" prefix)",
             trainable_path, name, prefix);
    out.trainable_params.emplace(name, read_checked(file, entry));
  }
}

AdapterDir read_adapter_dir(const std::string& dir) {
  std::error_code ec;
  LL_CHECK(fs::is_directory(dir, ec), "{}: no such adapter directory", dir);
  const std::string config_path = join(dir, kConfigFile);
  const std::string lora_path = join(dir, kLoraFile);
  const std::string trainable_path = join(dir, kTrainableFile);
  const std::string longlora_path = join(dir, kLongLoraFile);
  AdapterDir out;
  if (fs::exists(longlora_path, ec)) out.longlora = parse_longlora_json(longlora_path);
  if (!fs::exists(config_path, ec) && !fs::exists(lora_path, ec) &&
      fs::exists(trainable_path, ec)) {
    // A full-training directory (train_longlora --lora-rank 0): trained base tensors only.
    out.lora.rank = 0;
    out.lora.targets.clear();
    read_trainable_params(trainable_path, out);
    return out;
  }
  LL_CHECK(fs::exists(config_path, ec),
           "{}: missing; {} is not a PEFT/LongLoRA adapter "
           "directory",
           config_path, dir);
  if (!fs::exists(lora_path, ec)) {
    const std::string bin_path = join(dir, "adapter_model.bin");
    LL_CHECK(!fs::exists(bin_path, ec),
             "{}: missing, and adapter_model.bin (a PyTorch pickle) is not supported; convert it "
             "with: python -c \"import torch; from safetensors.torch import save_file; "
             "save_file(torch.load('{}'), '{}')\"",
             lora_path, bin_path, lora_path);
    fail("{}: missing; the adapter directory holds no LoRA weights", lora_path);
  }

  ParsedConfig config = parse_adapter_config(config_path);
  out.lora = config.lora;
  out.base_model = config.base_model;

  const SafetensorsFile lora_file = read_safetensors(lora_path);
  for (const TensorEntry& entry : lora_file.tensors) {
    int64_t layer = 0;
    std::string module;
    char which = 0;
    LL_CHECK(parse_peft_lora_key(entry.name, &layer, &module, &which),
             "{}: tensor \"{}\" is not a LoRA matrix (expected names like {}); modules_to_save "
             "and other PEFT extras are not supported",
             lora_path, entry.name, peft_lora_key(0, "q_proj", 'A'));
    const std::string key = peft_lora_key(layer, module, which);  // drops ".default"
    LL_CHECK(!out.lora_tensors.count(key),
             "{}: tensor \"{}\" appears twice (with and without "
             "the adapter name)",
             lora_path, key);
    out.lora_tensors.emplace(key, read_checked(lora_file, entry));
  }
  check_lora_tensors(lora_path, out.lora, out.lora_tensors, config.layers);

  if (fs::exists(trainable_path, ec)) read_trainable_params(trainable_path, out);
  return out;
}

}  // namespace ll
