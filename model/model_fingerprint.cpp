#include "model/model_fingerprint.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace ll {
namespace {

struct Fnv1a {
  uint64_t h = 0xcbf29ce484222325ull;
  void add(const void* data, size_t n) {
    const auto* p = static_cast<const unsigned char*>(data);
    for (size_t i = 0; i < n; ++i) {
      h ^= p[i];
      h *= 0x100000001b3ull;
    }
  }
};

}  // namespace

std::string model_fingerprint(const LlamaWeights& weights) {
  Fnv1a f;
  const std::string config = llama_config_to_json(weights.config).dump();
  f.add(config.data(), config.size());
  for (const TensorEntry& t : llama_weights_tensors(weights)) {
    f.add(t.name.data(), t.name.size());
    f.add(t.shape.data(), t.shape.size() * sizeof(int64_t));
    const auto* values = reinterpret_cast<const float*>(t.data);  // F32 views
    const int64_t n = t.numel();
    const int64_t stride = n > 4096 ? n / 4096 : 1;
    for (int64_t i = 0; i < n; i += stride) f.add(values + i, sizeof(float));
  }
  return fmt::format("{:016x}", f.h);
}

}  // namespace ll
