#pragma once
// Tiny Llama models on disk for the model-file tests: a temp directory that cleans itself up,
// a config small enough to load in microseconds, and writers for HF directories and raw
// (possibly damaged) safetensors bytes.
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/dtype.h"
#include "common/error.h"
#include "model/formats/safetensors.h"
#include "model/llama_config.h"
#include "model/llama_weights.h"

namespace ll::test {

namespace fs = std::filesystem;

// A fresh directory <tmp>/ll_test_<name>_<pid>, removed again when the object dies.
struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& name)
      : path(fs::temp_directory_path() / fmt::format("ll_test_{}_{}", name, ::getpid())) {
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

inline nlohmann::json tiny_config_json() {
  return {{"architectures", {"LlamaForCausalLM"}},
          {"model_type", "llama"},
          {"hidden_act", "silu"},
          {"hidden_size", 16},
          {"intermediate_size", 40},
          {"num_hidden_layers", 2},
          {"num_attention_heads", 4},
          {"num_key_value_heads", 2},
          {"vocab_size", 32},
          {"max_position_embeddings", 64},
          {"rms_norm_eps", 1e-5},
          {"rope_theta", 10000.0},
          {"rope_scaling", nullptr},
          {"tie_word_embeddings", false},
          {"bos_token_id", 1},
          {"eos_token_id", 2}};
}

inline LlamaConfig tiny_config() { return llama_config_from_json(tiny_config_json(), "tiny"); }

inline void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out.write(text.data(), std::streamsize(text.size()));
  LL_CHECK(out.good(), "{}: test could not write", path.string());
}

inline std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Tensor data in a chosen storage dtype, kept alive for write_safetensors.
struct EncodedTensor {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};

inline EncodedTensor encode(const TensorEntry& t, DType dtype) {
  EncodedTensor e{t.name, dtype, t.shape, {}};
  const size_t n = size_t(t.numel());
  std::vector<float> f(n);
  convert_to_f32(t.dtype, t.data, f.data(), n);
  e.bytes.resize(n * dtype_size(dtype));
  for (size_t i = 0; i < n; ++i) {
    if (dtype == DType::F32) {
      std::memcpy(&e.bytes[4 * i], &f[i], 4);
    } else {
      const uint16_t h = dtype == DType::F16 ? f32_to_f16(f[i]) : f32_to_bf16(f[i]);
      std::memcpy(&e.bytes[2 * i], &h, 2);
    }
  }
  return e;
}

inline std::vector<SafetensorsTensor> views(const std::vector<EncodedTensor>& tensors) {
  std::vector<SafetensorsTensor> out;
  for (const EncodedTensor& t : tensors) out.push_back({t.name, t.dtype, t.shape, t.bytes.data()});
  return out;
}

// A Hugging Face directory holding `weights`: config.json (from `config_json`, default the
// weights' own config) and model.safetensors, or `shards` shard files plus an index.
inline void write_hf_model(const fs::path& dir, const LlamaWeights& weights, DType dtype,
                           int shards = 1, const nlohmann::json* config_json = nullptr) {
  fs::create_directories(dir);
  write_text(dir / "config.json",
             (config_json ? *config_json : llama_config_to_json(weights.config)).dump(2));
  std::vector<EncodedTensor> encoded;
  for (const TensorEntry& t : llama_weights_tensors(weights)) {
    if (t.name == "lm_head.weight" && weights.config.tie_word_embeddings) continue;
    encoded.push_back(encode(t, dtype));
  }
  if (shards == 1) {
    write_safetensors((dir / "model.safetensors").string(), views(encoded), {{"format", "pt"}});
    return;
  }
  nlohmann::json index = {{"metadata", {{"total_size", 0}}},
                          {"weight_map", nlohmann::json::object()}};
  const size_t per = (encoded.size() + size_t(shards) - 1) / size_t(shards);
  for (int s = 0; s < shards; ++s) {
    const std::string name = fmt::format("model-{:05d}-of-{:05d}.safetensors", s + 1, shards);
    std::vector<EncodedTensor> part;
    for (size_t i = size_t(s) * per; i < std::min(encoded.size(), size_t(s + 1) * per); ++i) {
      part.push_back(encoded[i]);
      index["weight_map"][encoded[i].name] = name;
    }
    write_safetensors((dir / name).string(), views(part));
  }
  write_text(dir / "model.safetensors.index.json", index.dump(2));
}

// Raw safetensors bytes: 8-byte length (or `declared_len` when >= 0), header text, data.
inline void write_raw_safetensors(const fs::path& path, const std::string& header,
                                  const std::string& data, int64_t declared_len = -1) {
  const uint64_t len = declared_len >= 0 ? uint64_t(declared_len) : header.size();
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[size_t(i)] = char(uint8_t(len >> (8 * i)));
  write_text(path, bytes + header + data);
}

// A copy of the f32 HF model directory `src` at `dst` whose last weight is NaN: loading its
// weights fails with a NaN message, while its config and files open fine (for tests of what
// tools check before the weights load).
inline void copy_model_with_nan_weight(const fs::path& src, const fs::path& dst) {
  fs::copy(src, dst);
  std::fstream f(dst / "model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(-4, std::ios::end);  // the last f32 of the last tensor
  const uint32_t nan_bits = 0x7fc00000u;
  f.write(reinterpret_cast<const char*>(&nan_bits), 4);
}

inline bool bitwise_equal(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

inline bool weights_equal(const LlamaWeights& a, const LlamaWeights& b) {
  if (a.layers.size() != b.layers.size()) return false;
  if (!bitwise_equal(a.embed_tokens, b.embed_tokens) || !bitwise_equal(a.norm, b.norm) ||
      !bitwise_equal(a.lm_head, b.lm_head)) {
    return false;
  }
  for (size_t i = 0; i < a.layers.size(); ++i) {
    const LlamaLayerWeights &x = a.layers[i], &y = b.layers[i];
    if (!bitwise_equal(x.input_layernorm, y.input_layernorm) ||
        !bitwise_equal(x.q_proj, y.q_proj) || !bitwise_equal(x.k_proj, y.k_proj) ||
        !bitwise_equal(x.v_proj, y.v_proj) || !bitwise_equal(x.o_proj, y.o_proj) ||
        !bitwise_equal(x.post_attention_layernorm, y.post_attention_layernorm) ||
        !bitwise_equal(x.gate_proj, y.gate_proj) || !bitwise_equal(x.up_proj, y.up_proj) ||
        !bitwise_equal(x.down_proj, y.down_proj) || !bitwise_equal(x.q_bias, y.q_bias) ||
        !bitwise_equal(x.k_bias, y.k_bias) || !bitwise_equal(x.v_bias, y.v_bias) ||
        !bitwise_equal(x.o_bias, y.o_bias)) {
      return false;
    }
  }
  return true;
}

}  // namespace ll::test
