// The ./init_model tool end to end: a random model of each bundled family (models/families/)
// with its tokenizer files; --tokenizer as a tokenizer.json, a tokenizer.model or a directory;
// refusals (a tokenizer with more ids than the embedding, a damaged tokenizer, --out holding
// --config) exit 1 naming the file.
#include <doctest/doctest.h>
#include <sys/wait.h>

#include <cstdlib>

#include "data/tokenizer.h"
#include "model/formats/tensor_source.h"
#include "model/llama_config.h"
#include "tests/model/model_fixtures.h"
#include "tests/tools/run_tool.h"

using ll::test::read_bytes;
using ll::test::TempDir;
namespace fs = std::filesystem;

namespace {

using ll::test::RunResult;

RunResult run_init_model(const TempDir& dir, const std::string& args) {
  return ll::test::run_tool(dir, "init_model", args);
}

std::string family_dir(const std::string& name) {
  return std::string(LL_SOURCE_DIR) + "/models/families/" + name;
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

}  // namespace

TEST_CASE("init_model: each bundled family, with the tokenizer files beside its config") {
  REQUIRE(fs::exists(fs::path(LL_BINARY_DIR) / "init_model"));
  TempDir dir("init_model_families");
  struct Family {
    std::string name, model_type;
    int64_t vocab, tokenizer_ids, head_dim;
    bool tied, bias, generation_config;
  };
  for (const Family& f : {Family{"llama3-tiny", "llama", 1016, 1016, 32, true, false, true},
                          Family{"qwen2.5-tiny", "qwen2", 1024, 1007, 32, true, true, false},
                          Family{"mistral-tiny", "mistral", 1000, 1000, 16, false, false, false}}) {
    INFO(f.name);
    const std::string src = family_dir(f.name);
    const fs::path out = dir.path / f.name;
    const RunResult r =
        run_init_model(dir, fmt::format("--config '{}/config.json' --out '{}'", src, out.string()));
    INFO("stdout: ", r.out, "\nstderr: ", r.err);
    REQUIRE(r.exit_code == 0);
    CHECK(contains(r.out, "model      " + f.model_type + ": "));
    CHECK(contains(r.out, fmt::format("{} ids", f.tokenizer_ids)));

    // The tokenizer files are copied byte for byte; the tokenizer reads from its new place.
    CHECK(read_bytes(out / "tokenizer.json") == read_bytes(src + "/tokenizer.json"));
    CHECK(read_bytes(out / "tokenizer_config.json") == read_bytes(src + "/tokenizer_config.json"));
    CHECK(fs::exists(out / "generation_config.json") == f.generation_config);
    CHECK_FALSE(fs::exists(out / "tokenizer.model"));
    const ll::Tokenizer here((out / "tokenizer.json").string());
    const ll::Tokenizer there(src + "/tokenizer.json");
    CHECK(here.vocab_size() == f.tokenizer_ids);
    CHECK(here.bos_id() == there.bos_id());
    CHECK(here.eos_id() == there.eos_id());
    CHECK(here.add_bos() == there.add_bos());

    // The config is the family's: what the engine reads back equals what it read at first.
    const ll::LlamaConfig want = ll::llama_config_from_file(src + "/config.json");
    auto files = ll::open_model_files(out.string());
    const ll::LlamaConfig& got = files->config;
    CHECK(ll::model_type_name(got.family) == f.model_type);
    CHECK(got.vocab_size == f.vocab);
    CHECK(got.head_dim() == f.head_dim);
    CHECK(got.tie_word_embeddings == f.tied);
    CHECK(got.qkv_bias == f.bias);
    CHECK(got.eos_token_ids == want.eos_token_ids);
    CHECK(got.rope_theta == want.rope_theta);
    CHECK(got.rope_scaling == want.rope_scaling);
    CHECK((files->tensors.find("lm_head.weight") == nullptr) == f.tied);
    CHECK((files->tensors.find("model.layers.0.self_attn.q_proj.bias") != nullptr) == f.bias);
  }
}

TEST_CASE(
    "init_model --tokenizer: a tokenizer.json with its companions, a tokenizer.model, a "
    "directory; the other kind is replaced") {
  TempDir dir("init_model_tokenizer");
  // A config alone in a directory: no tokenizer to default to.
  fs::create_directories(dir.path / "cfg");
  fs::copy_file(family_dir("qwen2.5-tiny") + "/config.json", dir.path / "cfg" / "config.json");
  const std::string config = (dir.path / "cfg" / "config.json").string();
  const fs::path out = dir.path / "out";

  RunResult r = run_init_model(dir, fmt::format("--config '{}' --out '{}'", config, out.string()));
  INFO("stdout: ", r.out, "\nstderr: ", r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(contains(r.out, "tokenizer  none: no tokenizer.json or tokenizer.model beside --config"));
  CHECK(fs::exists(out / "model.safetensors"));
  CHECK_FALSE(fs::exists(out / "tokenizer.json"));

  // A directory: its tokenizer.json and the tokenizer_config.json beside it.
  const std::string qwen_fixture =
      std::string(LL_SOURCE_DIR) + "/tests/fixtures/tokenizer_json/qwen2";
  r = run_init_model(dir, fmt::format("--config '{}' --out '{}' --tokenizer '{}'", config,
                                      out.string(), qwen_fixture));
  INFO("stdout: ", r.out, "\nstderr: ", r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(read_bytes(out / "tokenizer.json") == read_bytes(qwen_fixture + "/tokenizer.json"));
  CHECK(read_bytes(out / "tokenizer_config.json") ==
        read_bytes(qwen_fixture + "/tokenizer_config.json"));
  CHECK(contains(r.out, "1007 ids; bos none, eos 1002"));

  // A tokenizer.model (the kind is read from the file): the tokenizer.json left by the run
  // before would be found first, so it goes.
  const std::string sp = std::string(LL_SOURCE_DIR) + "/models/kjv-tiny/tokenizer.model";
  fs::copy_file(family_dir("llama3-tiny") + "/config.json", config,
                fs::copy_options::overwrite_existing);
  nlohmann::json cfg = nlohmann::json::parse(read_bytes(config));
  cfg["vocab_size"] = 2000;
  ll::test::write_text(config, cfg.dump());
  r = run_init_model(
      dir, fmt::format("--config '{}' --out '{}' --tokenizer '{}'", config, out.string(), sp));
  INFO("stdout: ", r.out, "\nstderr: ", r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(read_bytes(out / "tokenizer.model") == read_bytes(sp));
  CHECK_FALSE(fs::exists(out / "tokenizer.json"));
  CHECK(ll::Tokenizer((out / "tokenizer.model").string()).vocab_size() == 2000);

  // A tokenizer.json file by name, with generation_config.json beside it; the
  // tokenizer.model goes.
  const std::string llama3 = family_dir("llama3-tiny") + "/tokenizer.json";
  r = run_init_model(
      dir, fmt::format("--config '{}' --out '{}' --tokenizer '{}'", config, out.string(), llama3));
  INFO("stdout: ", r.out, "\nstderr: ", r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(read_bytes(out / "tokenizer.json") == read_bytes(llama3));
  CHECK(read_bytes(out / "generation_config.json") ==
        read_bytes(family_dir("llama3-tiny") + "/generation_config.json"));
  CHECK_FALSE(fs::exists(out / "tokenizer.model"));

  // --no-tokenizer: nothing copied, even with tokenizer files beside --config.
  const fs::path bare = dir.path / "bare";
  r = run_init_model(dir, fmt::format("--config '{}/config.json' --out '{}' --no-tokenizer",
                                      family_dir("mistral-tiny"), bare.string()));
  INFO("stdout: ", r.out, "\nstderr: ", r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(fs::exists(bare / "config.json"));
  CHECK_FALSE(fs::exists(bare / "tokenizer.json"));
  CHECK_FALSE(fs::exists(bare / "tokenizer_config.json"));
}

TEST_CASE(
    "init_model refuses: more tokenizer ids than vocab_size, a damaged tokenizer, --out "
    "holding --config, a missing --tokenizer") {
  TempDir dir("init_model_refusals");
  const std::string mistral = family_dir("mistral-tiny") + "/config.json";
  const std::string out = (dir.path / "out").string();

  // Qwen2.5's 1007 ids into Mistral-tiny's 1000 rows.
  RunResult r =
      run_init_model(dir, fmt::format("--config '{}' --out '{}' --tokenizer '{}/tokenizer.json'",
                                      mistral, out, family_dir("qwen2.5-tiny")));
  CHECK(r.exit_code == 1);
  CHECK(contains(r.err, "the tokenizer has 1007 ids but the config's vocab_size is 1000"));
  CHECK_FALSE(fs::exists(out));  // refused before anything is written

  fs::create_directories(dir.path / "bad");
  ll::test::write_text(dir.path / "bad" / "tokenizer.json", "{\"version\": \"1.0\", \"model\": ");
  r = run_init_model(dir, fmt::format("--config '{}' --out '{}' --tokenizer '{}'", mistral, out,
                                      (dir.path / "bad" / "tokenizer.json").string()));
  CHECK(r.exit_code == 1);
  CHECK(contains(r.err, (dir.path / "bad" / "tokenizer.json").string()));

  r = run_init_model(dir, fmt::format("--config '{}' --out '{}' --tokenizer '{}'", mistral, out,
                                      (dir.path / "nowhere.json").string()));
  CHECK(r.exit_code == 1);
  CHECK(contains(r.err, "nowhere.json: tokenizer not found"));

  // Writing into the directory of --config would replace the publisher's config.json.
  fs::create_directories(dir.path / "own");
  fs::copy_file(mistral, dir.path / "own" / "config.json");
  r = run_init_model(dir, fmt::format("--config '{}/own/config.json' --out '{}/own/'",
                                      dir.path.string(), dir.path.string()));
  CHECK(r.exit_code == 1);
  CHECK(contains(r.err, "write the model to a new directory"));
  CHECK_FALSE(fs::exists(dir.path / "own" / "model.safetensors"));

  r = run_init_model(
      dir, fmt::format("--config '{}' --out '{}' --tokenizer x --no-tokenizer", mistral, out));
  CHECK(r.exit_code == 2);
}
