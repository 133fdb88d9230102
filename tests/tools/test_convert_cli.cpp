// The ./convert tool end to end: a good tiny HF model converts (exit 0) to a .bin that loads
// to the same weights; hostile inputs give exit status 1 and a message naming the file.
#include <doctest/doctest.h>
#include <sys/wait.h>

#include <cstdlib>

#include "model/formats/tensor_source.h"
#include "model/llama_weights.h"
#include "tests/model/model_fixtures.h"
#include "tests/test_paths.h"

using ll::DType;
using ll::test::TempDir;
namespace fs = std::filesystem;

namespace {

struct RunResult {
  int exit_code = -1;
  bool exited = false;
  std::string out, err;
};

RunResult run_convert(const TempDir& dir, const std::string& args) {
  const fs::path out = dir.path / "stdout.txt", err = dir.path / "stderr.txt";
  const std::string cmd =
      fmt::format("'{}/convert' {} >'{}' 2>'{}'", LL_BINARY_DIR, args, out.string(), err.string());
  const int status = std::system(cmd.c_str());
  RunResult r;
  r.exited = WIFEXITED(status);
  r.exit_code = r.exited ? WEXITSTATUS(status) : -1;
  r.out = ll::test::read_bytes(out);
  r.err = ll::test::read_bytes(err);
  return r;
}

}  // namespace

TEST_CASE("convert: a good model converts and loads to the same weights") {
  REQUIRE(fs::exists(fs::path(LL_BINARY_DIR) / "convert"));
  TempDir dir("convert_good");
  const ll::LlamaWeights w = ll::random_llama_weights(ll::test::tiny_config(), 21);
  const fs::path hf = dir.path / "hf";
  ll::test::write_hf_model(hf, w, DType::F32, 2);
  ll::test::write_text(hf / "tokenizer.model", "tokenizer bytes");
  fs::create_directories(dir.path / "out");
  const fs::path bin = dir.path / "out" / "tiny.bin";

  RunResult r = run_convert(dir, fmt::format("'{}' -o '{}'", hf.string(), bin.string()));
  INFO("stdout: ", r.out, "\nstderr: ", r.err);
  REQUIRE(r.exited);
  CHECK(r.exit_code == 0);
  CHECK(r.out.find("F32") != std::string::npos);  // the source dtype is kept by default
  CHECK(ll::test::read_bytes(dir.path / "out" / "tokenizer.model") == "tokenizer bytes");
  auto files = ll::open_model_files(bin.string());
  CHECK(files->tokenizer_path == (dir.path / "out" / "tokenizer.model").string());
  CHECK(ll::test::weights_equal(ll::load_llama_weights(*files), w));

  // --dtype bf16 from the .bin itself; the tokenizer already there is kept.
  const fs::path bf16 = dir.path / "out" / "tiny_bf16.bin";
  r = run_convert(dir, fmt::format("'{}' -o '{}' --dtype bf16", bin.string(), bf16.string()));
  CHECK(r.exit_code == 0);
  CHECK(r.out.find("already exists") != std::string::npos);
  const ll::LlamaWeights b = ll::load_llama_weights(*ll::open_model_files(bf16.string()));
  CHECK(b.layers[1].v_proj[3] == ll::bf16_to_f32(ll::f32_to_bf16(w.layers[1].v_proj[3])));
}

TEST_CASE("convert: the families' models round-trip through the .bin") {
  // Llama-3 (llama3 RoPE, tied, eos list, head_dim), Qwen2 (q/k/v biases, tied), Mistral
  // (head_dim != hidden / heads): the .bin holds the same config and the same weights, and the
  // tokenizer files beside the source go beside the .bin.
  REQUIRE(fs::exists(fs::path(LL_BINARY_DIR) / "convert"));
  for (const char* name : {"llama3", "qwen2", "mistral"}) {
    CAPTURE(name);
    TempDir dir(std::string("convert_family_") + name);
    const fs::path src = dir.path / "src";
    fs::create_directories(src);
    const std::string fixture =
        ll::test::source_path(std::string("tests/fixtures/families/") + name);
    for (const char* file : {"config.json", "model.safetensors"}) {
      fs::copy_file(fs::path(fixture) / file, src / file);
    }
    fs::copy_file(ll::test::source_path("tests/fixtures/tokenizer_json/llama3/tokenizer.json"),
                  src / "tokenizer.json");
    fs::copy_file(
        ll::test::source_path("tests/fixtures/tokenizer_json/llama3/tokenizer_config.json"),
        src / "tokenizer_config.json");
    const fs::path bin = dir.path / "out" / "model.bin";
    fs::create_directories(bin.parent_path());
    const RunResult r = run_convert(dir, fmt::format("'{}' -o '{}'", src.string(), bin.string()));
    INFO("stderr: ", r.err);
    REQUIRE(r.exit_code == 0);
    auto from_hf = ll::open_model_files(src.string());
    auto from_bin = ll::open_model_files(bin.string());
    const ll::LlamaConfig& a = from_hf->config;
    const ll::LlamaConfig& b = from_bin->config;
    CHECK(b.family == a.family);
    CHECK(b.head_dim() == a.head_dim());
    CHECK(b.qkv_bias == a.qkv_bias);
    CHECK(b.tie_word_embeddings == a.tie_word_embeddings);
    CHECK(b.eos_token_ids == a.eos_token_ids);
    CHECK(b.rope_scaling == a.rope_scaling);
    CHECK(ll::llama_storage_dtype(*from_bin) == DType::F32);  // the source's dtype
    CHECK(ll::test::weights_equal(ll::load_llama_weights(*from_bin),
                                  ll::load_llama_weights(*from_hf)));
    CHECK(from_bin->tokenizer_path == (bin.parent_path() / "tokenizer.json").string());
    CHECK(fs::exists(bin.parent_path() / "tokenizer_config.json"));
  }
}

TEST_CASE("convert: hostile inputs exit 1 with the file named on stderr") {
  REQUIRE(fs::exists(fs::path(LL_BINARY_DIR) / "convert"));
  TempDir dir("convert_hostile");
  const fs::path out = dir.path / "out.bin";
  const ll::LlamaWeights w = ll::random_llama_weights(ll::test::tiny_config(), 22);

  // 1. a truncated safetensors file
  const fs::path truncated = dir.path / "truncated";
  ll::test::write_hf_model(truncated, w, DType::BF16);
  fs::resize_file(truncated / "model.safetensors",
                  fs::file_size(truncated / "model.safetensors") - 3);
  // 2. a config whose heads do not divide the hidden size
  const fs::path heads = dir.path / "heads";
  nlohmann::json cfg = ll::test::tiny_config_json();
  cfg["num_attention_heads"] = 5;
  ll::test::write_hf_model(heads, w, DType::F32, 1, &cfg);
  // 3. a NaN in a weight
  ll::LlamaWeights bad = w;
  bad.layers[0].o_proj[0] = std::nanf("");
  const fs::path nan = dir.path / "nan";
  ll::test::write_hf_model(nan, bad, DType::F32);
  // 4. not a model at all
  const fs::path junk = dir.path / "junk.bin";
  ll::test::write_text(junk, "hello");

  const std::pair<fs::path, fs::path> cases[] = {
      {truncated, truncated / "model.safetensors"},
      {heads, heads / "config.json"},
      {nan, nan / "model.safetensors"},
      {junk, junk},
  };
  for (const auto& [input, named] : cases) {
    const RunResult r = run_convert(dir, fmt::format("'{}' -o '{}'", input.string(), out.string()));
    INFO("input: ", input.string(), "\nstderr: ", r.err);
    CHECK(r.exited);
    CHECK(r.exit_code == 1);
    CHECK(r.err.find("error: ") != std::string::npos);
    CHECK(r.err.find(named.string()) != std::string::npos);
    CHECK(!fs::exists(out));  // nothing half-written left behind
  }
  const RunResult usage = run_convert(dir, "");
  CHECK(usage.exited);
  CHECK(usage.exit_code != 0);
}
