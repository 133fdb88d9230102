// The ./generate tool end to end on models/kjv-tiny (CPU): greedy output equals the library's
// generate() on the same prompt, --json holds the ids and their detokenized text, stdout is
// just that text, the same seed gives the same sampled text, and bad input exits 1 with a
// message naming the problem.
#include <doctest/doctest.h>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "data/tokenizer.h"
#include "kernels/cpu/cpu_backend.h"
#include "model/formats/tensor_source.h"
#include "model/generation.h"
#include "model/llama_model.h"
#include "model/llama_weights.h"
#include "tests/kernels/kernel_test_util.h"
#include "tests/model/model_fixtures.h"
#include "tests/test_paths.h"

using ll::test::contains;
using ll::test::source_path;
using ll::test::TempDir;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const std::string kModel = "models/kjv-tiny";
const std::string kPrompt = "In the beginning God created";

struct RunResult {
  int exit_code = -1;
  std::string out, err;
};

RunResult run_generate(const TempDir& dir, const std::string& args) {
  const fs::path out = dir.path / "stdout.txt", err = dir.path / "stderr.txt";
  const std::string cmd = fmt::format("'{}/generate' --device cpu {} >'{}' 2>'{}'", LL_BINARY_DIR,
                                      args, out.string(), err.string());
  const int status = std::system(cmd.c_str());
  RunResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = ll::test::read_bytes(out);
  r.err = ll::test::read_bytes(err);
  return r;
}

json read_json(const fs::path& path) { return json::parse(ll::test::read_bytes(path)); }

std::vector<int32_t> ids_of(const json& j) { return j.get<std::vector<int32_t>>(); }

}  // namespace

TEST_CASE("generate: greedy text equals the library's generate, --json holds ids and text") {
  TempDir dir("generate_cli_greedy");
  const std::string model = source_path(kModel);
  const RunResult r =
      run_generate(dir, fmt::format("-m '{}' --prompt '{}' --max-new 12 --json '{}'", model,
                                    kPrompt, dir.file("out.json")));
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  const json j = read_json(dir.file("out.json"));
  const std::vector<int32_t> tokens = ids_of(j["tokens"]);
  const std::vector<int32_t> prompt = ids_of(j["prompt_tokens"]);

  // The prompt: BOS, then the tokenizer's ids of the text.
  const ll::Tokenizer tok(source_path(kModel + "/tokenizer.model"));
  std::vector<int32_t> expected_prompt = {int32_t(tok.bos_id())};
  for (int id : tok.encode(kPrompt)) expected_prompt.push_back(int32_t(id));
  CHECK(prompt == expected_prompt);
  CHECK(j["prompt"] == kPrompt);

  // The ids: what generate() gives on the same model and prompt, greedy, stopping at EOS.
  ll::CpuBackend backend;
  auto files = ll::open_model_files(model);
  ll::LlamaModel lib(backend, ll::load_llama_weights(*files));
  ll::GenerationOptions o;
  o.max_new_tokens = 12;
  o.stop_tokens = {int32_t(tok.eos_id())};
  const ll::GenerationResult ref = ll::generate(lib, expected_prompt, o);
  CHECK(tokens == ref.tokens);
  CHECK(j["stopped_at_eos"] == ref.stopped);
  CHECK((ref.stopped || tokens.size() == 12));

  // The text: the detokenized ids, and stdout is exactly that text (setup lines on stderr).
  const std::string text = tok.decode(std::vector<int>(tokens.begin(), tokens.end()));
  CHECK(j["text"] == text);
  CHECK(!text.empty());
  CHECK(r.out == text + "\n");
  CHECK(contains(r.err, "prefill"));
  CHECK(contains(r.err, "decode"));
  CHECK(contains(r.err, "tok/s"));
  CHECK(j["timing"]["decode_tokens_per_s"].get<double>() > 0.0);

  // --prompt-file gives the same result as --prompt.
  ll::test::write_text(dir.path / "prompt.txt", kPrompt);
  const RunResult f =
      run_generate(dir, fmt::format("-m '{}' --prompt-file '{}' --max-new 12 --json '{}'", model,
                                    dir.file("prompt.txt"), dir.file("file.json")));
  REQUIRE(f.exit_code == 0);
  CHECK(ids_of(read_json(dir.file("file.json"))["tokens"]) == tokens);
}

TEST_CASE("generate: the same seed gives the same sampled text, another seed another") {
  TempDir dir("generate_cli_sampled");
  const std::string model = source_path(kModel);
  auto sample = [&](uint64_t seed, const std::string& name) {
    const RunResult r = run_generate(
        dir, fmt::format("-m '{}' --prompt '{}' --max-new 16 --temperature 0.8 --top-p 0.95 "
                         "--seed {} --json '{}'",
                         model, kPrompt, seed, dir.file(name)));
    INFO(r.err);
    REQUIRE(r.exit_code == 0);
    CHECK(contains(r.err, "temperature 0.8"));
    return ids_of(read_json(dir.file(name))["tokens"]);
  };
  const std::vector<int32_t> a = sample(7, "a.json"), b = sample(7, "b.json");
  CHECK(a == b);
  CHECK(sample(8, "c.json") != a);
}

TEST_CASE("generate: bad input exits 1 with a clear message") {
  TempDir dir("generate_cli_bad");
  const std::string model = source_path(kModel);
  auto fails_with = [&](const std::string& args, const std::vector<std::string>& parts) {
    const RunResult r = run_generate(dir, args);
    INFO(args);
    INFO(r.err);
    CHECK(r.exit_code == 1);
    CHECK(r.out.empty());
    for (const std::string& p : parts) CHECK(contains(r.err, p));
  };
  const std::string m = "-m '" + model + "'";
  fails_with("-m '" + dir.file("nope") + "' --prompt hi", {"generate: error", "nope"});
  fails_with(m + " --prompt hi --temperature -1", {"--temperature", "-1"});
  fails_with(m + " --prompt hi --temperature 0.8 --top-p 0", {"--top-p"});
  fails_with(m + " --prompt hi --top-p 1.5", {"--top-p", "1.5"});
  fails_with(m + " --prompt hi --max-new 0", {"--max-new"});
  ll::test::write_text(dir.path / "p.txt", "hi");
  fails_with(m + " --prompt hi --prompt-file '" + dir.file("p.txt") + "'", {"exactly one", "both"});
  fails_with(m + " --max-new 4", {"exactly one"});
  fails_with(m + " --prompt-file '" + dir.file("missing.txt") + "'", {"missing.txt"});
  // The model's context is 128 tokens: prompt + --max-new beyond it names both numbers.
  fails_with(m + " --prompt hi --max-new 200", {"--max-new 200", "128", "--context-size"});
  std::string long_prompt;
  for (int i = 0; i < 60; ++i) long_prompt += "and the LORD spake ";
  fails_with(m + " --prompt '" + long_prompt + "' --max-new 4", {"128", "prompt"});
  // A model directory without tokenizer.model; --tokenizer repairs it.
  const fs::path bare = dir.path / "bare";
  fs::create_directories(bare);
  for (const char* f : {"config.json", "model.safetensors"})
    fs::create_symlink(fs::path(model) / f, bare / f);
  fails_with("-m '" + bare.string() + "' --prompt hi", {"tokenizer.model", "--tokenizer"});
  const RunResult ok = run_generate(dir, "-m '" + bare.string() +
                                             "' --prompt hi --max-new 2 "
                                             "--tokenizer '" +
                                             model + "/tokenizer.model'");
  INFO(ok.err);
  CHECK(ok.exit_code == 0);
  // An adapter for another model.
  fails_with(m + " --prompt hi --max-new 2 --lora '" +
                 source_path("tests/fixtures/tiny_llama_peft_adapter") + "'",
             {"adapter", "does not fit"});
}

// The context is checked before the weights load (minutes for 7B): on a copy of the model with
// a NaN in its weights, a too-long request reports the context, a valid one the NaN.
TEST_CASE("generate: the context check comes before the weights load") {
  TempDir dir("generate_cli_order");
  const fs::path copy = dir.path / "nan-model";
  ll::test::copy_model_with_nan_weight(source_path("models/kjv-tiny"), copy);
  const std::string m = "-m '" + copy.string() + "' --prompt hi ";
  const RunResult too_long = run_generate(dir, m + "--max-new 500");
  INFO(too_long.err);
  CHECK(too_long.exit_code == 1);
  CHECK(contains(too_long.err, "more than the model's context of 128 tokens"));
  const RunResult fits = run_generate(dir, m + "--max-new 2");
  INFO(fits.err);
  CHECK(fits.exit_code == 1);
  CHECK(contains(fits.err, "NaN"));
}
