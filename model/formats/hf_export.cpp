#include "model/formats/hf_export.h"

#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/atomic_file.h"
#include "common/error.h"
#include "data/tokenizer_path.h"
#include "model/formats/safetensors.h"

namespace ll {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr const char* kSingleFile = "model.safetensors";
constexpr const char* kIndexFile = "model.safetensors.index.json";
constexpr uintmax_t kMaxTokenizerBytes = uintmax_t(1) << 30;  // real ones are under 10 MB

std::string shard_name(int index, int count) {
  return fmt::format("model-{:05d}-of-{:05d}.safetensors", index + 1, count);
}

// A file name an export writes (so a directory holding only these is a previous export).
bool is_export_file(const std::string& name) {
  // model-DDDDD-of-DDDDD.safetensors
  const std::string pattern = "model-#####-of-#####.safetensors";
  bool shard = name.size() == pattern.size();
  for (size_t i = 0; shard && i < name.size(); ++i) {
    shard = pattern[i] == '#' ? std::isdigit(static_cast<unsigned char>(name[i])) != 0
                              : name[i] == pattern[i];
  }
  return shard || name == "config.json" || name == "tokenizer.model" || name == "tokenizer.json" ||
         name == "tokenizer_config.json" || name == "special_tokens_map.json" ||
         name == "generation_config.json" || name == kSingleFile || name == kIndexFile;
}

const char* torch_dtype_name(DType dtype) {
  switch (dtype) {
    case DType::F32:
      return "float32";
    case DType::F16:
      return "float16";
    default:
      return "bfloat16";
  }
}

void write_text(const std::string& path, const std::string& text) {
  AtomicFileWriter out(path);
  out.write(text.data(), text.size());
  out.commit();
}

// Copies a tokenizer (or other small) file through AtomicFileWriter, so that it is flushed like
// every other file.
void copy_tokenizer(const std::string& from, const std::string& to) {
  std::error_code ec;
  const uintmax_t size = fs::file_size(from, ec);
  LL_CHECK(!ec, "{}: cannot read the tokenizer: {}", from, ec.message());
  LL_CHECK(size <= kMaxTokenizerBytes, "{}: {} bytes is too large for a tokenizer file", from,
           size);
  std::ifstream in(from, std::ios::binary);
  std::string bytes(size_t(size), '\0');
  in.read(bytes.data(), std::streamsize(size));
  LL_CHECK(in.good() || size == 0, "{}: cannot read the tokenizer: {}", from, std::strerror(errno));
  write_text(to, bytes);
}

// config.json: the base's document (when there is one) with every field the engine reads or
// writes replaced by ours, so that the export differs from the base only where the model does
// (RoPE scaling, dtype, an untied head). The RoPE and dtype spellings of both transformers
// generations are dropped first: ours is the one transformers then reads.
json export_config_json(const LlamaConfig& config, const std::string& base_config_path,
                        DType dtype) {
  json doc = json::object();
  if (!base_config_path.empty()) {
    std::ifstream in(base_config_path, std::ios::binary);
    LL_CHECK(in.good(), "{}: cannot read the base's config: {}", base_config_path,
             std::strerror(errno));
    try {
      doc = json::parse(in);
    } catch (const json::exception& e) {
      fail("{}: the base's config is not valid JSON: {}", base_config_path, e.what());
    }
    LL_CHECK(doc.is_object(), "{}: the base's config is not a JSON object", base_config_path);
    for (const char* key : {"rope_parameters", "rope_scaling", "rope_theta", "dtype", "torch_dtype",
                            "transformers_version"}) {
      doc.erase(key);
    }
  }
  const json ours = llama_config_to_json(config);
  for (const auto& [key, value] : ours.items()) doc[key] = value;
  doc["torch_dtype"] = torch_dtype_name(dtype);
  return doc;
}

// One tensor to write: the F32 source view and its bytes in the target dtype.
struct Encoded {
  const TensorEntry* source = nullptr;
  std::vector<uint16_t> half;  // [numel] F16/BF16 values; empty for F32 (source written as is)
  uint64_t nbytes = 0;
};

// Converts `t` (F32) to `dtype`, checking every value is finite there (F16 overflows at 65504).
Encoded encode(const TensorEntry& t, DType dtype) {
  Encoded e;
  e.source = &t;
  const int64_t n = t.numel();
  e.nbytes = uint64_t(n) * dtype_size(dtype);
  const float* src = reinterpret_cast<const float*>(t.data);
  if (dtype != DType::F32) e.half.resize(size_t(n));
  int64_t bad = -1;  // n - (first bad index), so that max finds the first
#pragma omp parallel for schedule(static) reduction(max : bad) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    float v = src[i];
    if (dtype == DType::F16) {
      e.half[size_t(i)] = f32_to_f16(v);
      v = f16_to_f32(e.half[size_t(i)]);
    } else if (dtype == DType::BF16) {
      e.half[size_t(i)] = f32_to_bf16(v);
      v = bf16_to_f32(e.half[size_t(i)]);
    }
    if (!std::isfinite(v)) bad = std::max(bad, n - i);
  }
  if (bad >= 0) {
    const int64_t at = n - bad;
    LL_CHECK(!std::isfinite(src[at]),
             "tensor \"{}\" element {} = {} does not fit in {}; export "
             "with --dtype bf16 or f32",
             t.name, at, src[at], dtype_name(dtype));
    fail("tensor \"{}\" holds {} at element {}; the merged weights are damaged", t.name,
         std::isnan(src[at]) ? "NaN" : "Inf", at);
  }
  return e;
}

void write_shard(const std::string& path, const std::vector<const TensorEntry*>& tensors,
                 DType dtype) {
  std::vector<Encoded> encoded;
  encoded.reserve(tensors.size());
  for (const TensorEntry* t : tensors) encoded.push_back(encode(*t, dtype));
  std::vector<SafetensorsTensor> views;
  for (const Encoded& e : encoded) {
    const void* data = e.half.empty() ? static_cast<const void*>(e.source->data)
                                      : static_cast<const void*>(e.half.data());
    views.push_back({e.source->name, dtype, e.source->shape, data});
  }
  // transformers refuses safetensors files without {"format": "pt"}.
  write_safetensors(path, views, {{"format", "pt"}});
}

// Refuses a `dir` that holds anything an export does not write (it will be replaced).
void check_destination(const std::string& dir) {
  std::error_code ec;
  if (!fs::exists(fs::symlink_status(dir, ec))) return;
  LL_CHECK(fs::is_directory(dir, ec), "{}: exists and is not a directory; choose another --out",
           dir);
  for (const fs::directory_entry& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    LL_CHECK(is_export_file(name),
             "{}: exists and holds {}, which an export does not write; remove the directory or "
             "choose another --out (a previous export is replaced)",
             dir, name);
  }
  LL_CHECK(!ec, "{}: cannot list: {}", dir, ec.message());
}

// Moves the finished `tmp` to `dir`, replacing a previous export.
void install(const std::string& tmp, const std::string& dir) {
  std::error_code ec;
  const std::string parent = fs::absolute(dir).parent_path().string();
  std::string aside;
  if (fs::exists(dir, ec) && !fs::is_empty(dir, ec)) {
    aside = fmt::format("{}.old.{}", dir, ::getpid());
    fs::remove_all(aside, ec);
    fs::rename(dir, aside, ec);
    LL_CHECK(!ec, "cannot move the previous export {} aside: {}", dir, ec.message());
  } else if (fs::exists(dir, ec)) {
    fs::remove(dir, ec);  // empty
  }
  fs::rename(tmp, dir, ec);
  LL_CHECK(!ec, "cannot rename {} to {}: {}", tmp, dir, ec.message());
  fsync_directory(parent);
  if (!aside.empty()) fs::remove_all(aside, ec);
}

}  // namespace

HfExportSummary write_hf_model_dir(const std::string& dir_arg, const LlamaWeights& weights,
                                   const HfExportOptions& o) {
  // "out/" and "out" name the same directory; the temporary one goes next to it.
  std::string dir = fs::path(dir_arg).lexically_normal().string();
  while (dir.size() > 1 && dir.back() == '/') dir.pop_back();
  LL_CHECK(!dir.empty() && dir != "." && dir != "..", "{}: not a directory name to export to",
           dir_arg);
  validate_rope_scaling(o.rope, "export RoPE scaling");
  LL_CHECK(o.dtype == DType::F32 || o.dtype == DType::F16 || o.dtype == DType::BF16,
           "cannot export weights as {} (F32, F16 or BF16)", dtype_name(o.dtype));
  LL_CHECK(o.max_shard_bytes > 0, "the shard size limit must be positive");
  LL_CHECK(!o.tokenizer_path.empty(),
           "missing tokenizer: the base model has no tokenizer.json or tokenizer.model next to "
           "its weights; pass --tokenizer PATH");
  std::error_code ec;
  LL_CHECK(fs::is_regular_file(o.tokenizer_path, ec), "{}: missing tokenizer (no such file)",
           o.tokenizer_path);
  LlamaConfig config = weights.config;
  config.rope_scaling = o.rope;
  validate_llama_config(config, dir + "/config.json");
  check_destination(dir);

  // Tensors in HF order; a tied lm_head is not stored (transformers ties it on loading).
  const std::vector<TensorEntry> all = llama_weights_tensors(weights);
  std::vector<const TensorEntry*> tensors;
  for (const TensorEntry& t : all) {
    if (t.name == "lm_head.weight" && config.tie_word_embeddings) continue;
    tensors.push_back(&t);
  }
  // Shards: a new one when the next tensor would overflow the current (a tensor larger than
  // the limit gets a shard of its own), as transformers splits them.
  std::vector<std::vector<const TensorEntry*>> shards(1);
  HfExportSummary summary;
  uint64_t shard_bytes = 0;
  for (const TensorEntry* t : tensors) {
    const uint64_t bytes = uint64_t(t->numel()) * dtype_size(o.dtype);
    if (!shards.back().empty() && shard_bytes + bytes > o.max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back(t);
    shard_bytes += bytes;
    summary.weight_bytes += bytes;
  }
  summary.shards = int(shards.size());
  LL_CHECK(shards.size() <= 99999,
           "{} shards is more than the file names allow; raise "
           "--max-shard-size",
           shards.size());

  const std::string tmp = fmt::format("{}.tmp.{}", dir, ::getpid());
  fs::remove_all(tmp, ec);
  try {
    fs::create_directories(tmp, ec);
    LL_CHECK(!ec, "{}: cannot create: {}", tmp, ec.message());
    if (shards.size() == 1) {
      write_shard(tmp + "/" + kSingleFile, shards[0], o.dtype);
      summary.files.push_back(kSingleFile);
    } else {
      json weight_map = json::object();  // sorted by tensor name, as transformers writes it
      for (size_t s = 0; s < shards.size(); ++s) {
        const std::string name = shard_name(int(s), int(shards.size()));
        write_shard(tmp + "/" + name, shards[s], o.dtype);
        for (const TensorEntry* t : shards[s]) weight_map[t->name] = name;
        summary.files.push_back(name);
      }
      const json index = {{"metadata", {{"total_size", summary.weight_bytes}}},
                          {"weight_map", weight_map}};
      write_text(tmp + "/" + kIndexFile, index.dump(2) + "\n");
      summary.files.push_back(kIndexFile);
    }
    const json config_json = export_config_json(config, o.base_config_path, o.dtype);
    write_text(tmp + "/config.json", config_json.dump(2) + "\n");
    summary.files.push_back("config.json");
    std::vector<TokenizerFile> copies = tokenizer_files(o.tokenizer_path);
    if (!o.generation_config_path.empty()) {
      copies.push_back({o.generation_config_path, "generation_config.json"});
    }
    for (const TokenizerFile& file : copies) {
      copy_tokenizer(file.path, tmp + "/" + file.name);
      summary.files.push_back(file.name);
    }
    fsync_directory(tmp);
    install(tmp, dir);
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
  return summary;
}

uint64_t parse_byte_size(const std::string& text) {
  size_t digits = 0;
  while (digits < text.size() && std::isdigit(static_cast<unsigned char>(text[digits]))) {
    ++digits;
  }
  std::string unit = text.substr(digits);
  for (char& c : unit) c = char(std::toupper(static_cast<unsigned char>(c)));
  static const std::pair<const char*, uint64_t> units[] = {{"", 1},
                                                           {"B", 1},
                                                           {"KB", 1000ull},
                                                           {"MB", 1000000ull},
                                                           {"GB", 1000000000ull},
                                                           {"TB", 1000000000000ull},
                                                           {"KIB", 1ull << 10},
                                                           {"MIB", 1ull << 20},
                                                           {"GIB", 1ull << 30},
                                                           {"TIB", 1ull << 40}};
  const auto* match = std::find_if(std::begin(units), std::end(units),
                                   [&](const auto& u) { return unit == u.first; });
  LL_CHECK(digits > 0 && digits <= 15 && match != std::end(units),
           "size \"{}\" is not understood; write a whole number with an optional unit: 5GB, "
           "500MB, 64KB, 2GiB or bytes",
           text);
  const uint64_t value = std::stoull(text.substr(0, digits));
  LL_CHECK(value > 0, "size \"{}\" must be positive", text);
  LL_CHECK(value <= UINT64_MAX / match->second, "size \"{}\" is too large", text);
  return value * match->second;
}

}  // namespace ll
