// init_model: a randomly initialised Llama model as a Hugging Face directory (config.json,
// model.safetensors, optionally tokenizer.model), the starting point for pretraining a small
// model with train_longlora --trainable all (how the demo model was made).
#include <CLI/CLI.hpp>
#include <filesystem>
#include <fstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/atomic_file.h"
#include "common/error.h"
#include "common/tool_main.h"
#include "model/formats/safetensors.h"
#include "model/llama_config.h"
#include "model/llama_weights.h"

namespace {

namespace fs = std::filesystem;

struct Options {
  std::string config;
  std::string out;
  std::string tokenizer;
  uint64_t seed = 1;
  float init_std = 0.02f;
};

int run(int argc, char** argv) {
  Options o;
  CLI::App app{
      "Write a randomly initialised Llama model (normal(0, std) weights, norms 1) as a "
      "Hugging Face directory.\nExample: ./init_model --config models/kjv-tiny/"
      "config.json --out /tmp/kjv-init --tokenizer models/kjv-tiny/tokenizer.model"};
  app.add_option("--config", o.config, "a Hugging Face config.json (LlamaForCausalLM)")->required();
  app.add_option("--out", o.out, "directory to write")->required();
  app.add_option("--tokenizer", o.tokenizer, "tokenizer.model to copy next to the weights");
  app.add_option("--seed", o.seed, "random seed")->capture_default_str();
  app.add_option("--std", o.init_std, "standard deviation of the weights")->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  LL_CHECK(o.init_std > 0.0f && o.init_std < 1.0f, "--std must be in (0, 1), got {}", o.init_std);
  const ll::LlamaConfig config = ll::llama_config_from_file(o.config);
  const ll::LlamaWeights weights = ll::random_llama_weights(config, o.seed, o.init_std);
  fs::create_directories(o.out);
  std::vector<ll::SafetensorsTensor> tensors;
  for (const ll::TensorEntry& t : ll::llama_weights_tensors(weights)) {
    if (t.name == "lm_head.weight" && config.tie_word_embeddings) continue;
    tensors.push_back({t.name, ll::DType::F32, t.shape, t.data});
  }
  ll::write_safetensors(o.out + "/model.safetensors", tensors, {{"format", "pt"}});
  const std::string json = ll::llama_config_to_json(config).dump(2) + "\n";
  ll::AtomicFileWriter cfg(o.out + "/config.json");
  cfg.write(json.data(), json.size());
  cfg.commit();
  if (!o.tokenizer.empty()) {
    fs::copy_file(o.tokenizer, o.out + "/tokenizer.model", fs::copy_options::overwrite_existing);
  }
  fmt::print("wrote {} ({} tensors, seed {}, std {})\n", o.out, tensors.size(), o.seed, o.init_std);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return ll::run_tool("init_model", [&] { return run(argc, argv); });
}
