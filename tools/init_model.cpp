// init_model: a randomly initialised model of any supported family (Llama-2, Llama-3.x, Qwen2,
// Mistral) as a Hugging Face directory: config.json, model.safetensors and the tokenizer files,
// the starting point for pretraining (how the demo model was made) or for trying the tools on
// a family without downloading one (models/families/).
#include <CLI/CLI.hpp>
#include <filesystem>
#include <optional>
#include <system_error>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/atomic_file.h"
#include "common/error.h"
#include "common/tool_main.h"
#include "data/tokenizer.h"
#include "data/tokenizer_path.h"
#include "kernels/rope_scaling.h"
#include "model/formats/safetensors.h"
#include "model/llama_config.h"
#include "model/llama_weights.h"

namespace {

namespace fs = std::filesystem;

struct Options {
  std::string config;
  std::string out;
  std::string tokenizer;
  bool no_tokenizer = false;
  uint64_t seed = 1;
  float init_std = 0.02f;
};

// Files a Hugging Face model directory keeps beside its tokenizer: BOS/EOS, whether BOS is
// added, the chat template, generation's stop ids. Copied when present.
constexpr const char* kTokenizerCompanions[] = {"tokenizer_config.json", "special_tokens_map.json",
                                                "generation_config.json"};

void copy_into(const fs::path& from, const fs::path& to) {
  std::error_code ec;
  fs::copy_file(from, to, fs::copy_options::overwrite_existing, ec);
  LL_CHECK(!ec, "{}: cannot copy to {}: {}", from.string(), to.string(), ec.message());
}

// The tokenizer named by --tokenizer (a file, or a directory holding tokenizer.json or
// tokenizer.model), else the one beside --config; "" when there is none to copy.
std::string tokenizer_source(const Options& o) {
  if (o.no_tokenizer) return {};
  std::error_code ec;
  if (!o.tokenizer.empty()) {
    if (fs::is_directory(o.tokenizer, ec)) return ll::find_tokenizer(o.tokenizer, "");
    return ll::find_tokenizer("", o.tokenizer);
  }
  fs::path dir = fs::path(o.config).parent_path();
  if (dir.empty()) dir = ".";
  for (const char* name : {"tokenizer.json", "tokenizer.model"}) {
    if (fs::is_regular_file(dir / name, ec)) return (dir / name).string();
  }
  return {};
}

// Reads the tokenizer in full (a damaged one fails here, before anything is written) and
// checks that the embedding has a row for each of its ids.
void check_tokenizer(const ll::Tokenizer& tok, const ll::LlamaConfig& config) {
  LL_CHECK(tok.vocab_size() <= config.vocab_size,
           "{}: the tokenizer has {} ids but the config's vocab_size is {}; the embedding needs a "
           "row for every id",
           tok.path(), tok.vocab_size(), config.vocab_size);
}

// Copies the tokenizer (under its kind's file name) and its companions into `out`; returns
// the summary line.
std::string copy_tokenizer(const ll::Tokenizer& tok, const fs::path& out) {
  const std::string& source = tok.path();
  const bool json = tok.kind() == ll::TokenizerKind::HuggingFaceJson;
  const char* name = json ? "tokenizer.json" : "tokenizer.model";
  // A tokenizer of the other kind left by an earlier run would be found first (or instead).
  std::error_code ec;
  fs::remove(out / (json ? "tokenizer.model" : "tokenizer.json"), ec);
  copy_into(source, out / name);
  std::vector<std::string> copied{name};
  const fs::path dir = fs::path(source).parent_path();
  for (const char* companion : kTokenizerCompanions) {
    const fs::path from = (dir.empty() ? fs::path(".") : dir) / companion;
    if (fs::is_regular_file(from, ec)) {
      copy_into(from, out / companion);
      copied.emplace_back(companion);
    }
  }
  return fmt::format("{} from {} ({} ids; bos {}, eos {})", fmt::join(copied, ", "),
                     dir.empty() ? "." : dir.string(), tok.vocab_size(),
                     tok.bos_id() < 0
                         ? std::string("none")
                         : fmt::format("{}{}", tok.bos_id(), tok.add_bos() ? "" : " (not added)"),
                     tok.eos_id() < 0 ? std::string("none") : std::to_string(tok.eos_id()));
}

int run(int argc, char** argv) {
  Options o;
  CLI::App app{
      "Write a randomly initialised model (normal(0, std) weights, norms 1, biases 0) of the "
      "family its config.json names, as a Hugging Face directory with its tokenizer.\n"
      "Example: ./init_model --config models/families/llama3-tiny/config.json --out "
      "/tmp/llama3-tiny"};
  app.add_option("--config", o.config,
                 "a Hugging Face config.json (Llama-2, Llama-3.x, Qwen2/2.5 or Mistral)")
      ->required();
  app.add_option("--out", o.out, "directory to write")->required();
  app.add_option("--tokenizer", o.tokenizer,
                 "tokenizer.json or tokenizer.model to copy (with the tokenizer_config.json, "
                 "special_tokens_map.json and generation_config.json beside it), or a directory "
                 "holding one; default: the one beside --config");
  app.add_flag("--no-tokenizer", o.no_tokenizer, "write no tokenizer")->excludes("--tokenizer");
  app.add_option("--seed", o.seed, "random seed")->capture_default_str();
  app.add_option("--std", o.init_std, "standard deviation of the weights")->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  LL_CHECK(o.init_std > 0.0f && o.init_std < 1.0f, "--std must be in (0, 1), got {}", o.init_std);
  const ll::LlamaConfig config = ll::llama_config_from_file(o.config);
  std::error_code ec;
  LL_CHECK(!fs::exists(o.out, ec) || !fs::equivalent(o.out,
                                                     fs::path(o.config).parent_path().empty()
                                                         ? fs::path(".")
                                                         : fs::path(o.config).parent_path(),
                                                     ec),
           "{} holds the --config {}; write the model to a new directory", o.out, o.config);
  const std::string tokenizer_path = tokenizer_source(o);
  std::optional<ll::Tokenizer> tokenizer;
  if (!tokenizer_path.empty()) {
    tokenizer.emplace(tokenizer_path);
    check_tokenizer(*tokenizer, config);
  }

  fs::create_directories(o.out);
  const std::string tokenizer_note =
      tokenizer ? copy_tokenizer(*tokenizer, o.out)
                : std::string(o.no_tokenizer ? "none (--no-tokenizer)"
                                             : "none: no tokenizer.json or tokenizer.model "
                                               "beside --config; pass --tokenizer PATH");

  const ll::LlamaWeights weights = ll::random_llama_weights(config, o.seed, o.init_std);
  std::vector<ll::SafetensorsTensor> tensors;
  int64_t params = 0;
  for (const ll::TensorEntry& t : ll::llama_weights_tensors(weights)) {
    if (t.name == "lm_head.weight" && config.tie_word_embeddings) continue;
    tensors.push_back({t.name, ll::DType::F32, t.shape, t.data});
    params += t.numel();
  }
  ll::write_safetensors(o.out + "/model.safetensors", tensors, {{"format", "pt"}});
  const std::string json = ll::llama_config_to_json(config).dump(2) + "\n";
  ll::AtomicFileWriter cfg(o.out + "/config.json");
  cfg.write(json.data(), json.size());
  cfg.commit();

  fmt::print(
      "model      {}: {} layers, hidden {}, {} heads / {} kv of dim {}, ffn {}, vocab {}{}{}, "
      "max_position_embeddings {}, rope_theta {}, rope_scaling {}\n",
      ll::model_type_name(config.family), config.num_hidden_layers, config.hidden_size,
      config.num_attention_heads, config.num_key_value_heads, config.head_dim(),
      config.intermediate_size, config.vocab_size, config.qkv_bias ? ", q/k/v bias" : "",
      config.tie_word_embeddings ? ", tied embeddings" : "", config.max_position_embeddings,
      config.rope_theta, ll::describe_rope_scaling(config.rope_scaling));
  fmt::print("wrote      {} ({} tensors, {} parameters, F32; seed {}, std {})\n", o.out,
             tensors.size(), params, o.seed, o.init_std);
  fmt::print("tokenizer  {}\n", tokenizer_note);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return ll::run_tool("init_model", [&] { return run(argc, argv); });
}
