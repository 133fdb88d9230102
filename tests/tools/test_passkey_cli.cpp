// The ./passkey tool end to end on models/kjv-tiny (CPU): the table and a JSON file whose
// numbers agree with each other and with the per-trial details, the same JSON for the same
// seed, and bad inputs (context size strings, missing model or tokenizer, 0 trials, a context
// beyond the model's) exiting non-zero with a clear message.
#include <doctest/doctest.h>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "tests/kernels/kernel_test_util.h"
#include "tests/model/model_fixtures.h"

using ll::test::contains;
using ll::test::TempDir;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const std::string kModel = std::string(LL_SOURCE_DIR) + "/models/kjv-tiny";

struct RunResult {
  int exit_code = -1;
  std::string out, err;
};

RunResult run_passkey(const TempDir& dir, const std::string& args) {
  const fs::path out = dir.path / "stdout.txt", err = dir.path / "stderr.txt";
  const std::string cmd =
      fmt::format("'{}/passkey' {} >'{}' 2>'{}'", LL_BINARY_DIR, args, out.string(), err.string());
  const int status = std::system(cmd.c_str());
  RunResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = ll::test::read_bytes(out);
  r.err = ll::test::read_bytes(err);
  return r;
}

// kjv-tiny was pretrained at 128 tokens: --context-size 512 interpolates positions x4.
std::string good_args(const std::string& json_path, int seed) {
  return fmt::format(
      "-m '{}' --device cpu --context-size 512 --context-sizes 256,512 "
      "--trials 2 --seed {} --json '{}'",
      kModel, seed, json_path);
}

}  // namespace

TEST_CASE("passkey: table and JSON agree, the same seed gives the same JSON") {
  REQUIRE(fs::exists(fs::path(LL_BINARY_DIR) / "passkey"));
  TempDir dir("passkey_cli_good");
  const std::string a = dir.file("a.json"), b = dir.file("b.json"), c = dir.file("c.json");
  const RunResult r = run_passkey(dir, good_args(a, 7));
  INFO(r.out << r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(contains(r.out, "rope           linear (factor 4)"));
  CHECK(contains(r.out, "prompt tokens"));
  CHECK(contains(r.out, "accuracy"));

  const json j = json::parse(ll::test::read_bytes(a));
  CHECK(j.at("seed") == 7);
  CHECK(j.at("trials") == 2);
  CHECK(j.at("position_interpolation_factor").get<double>() == 4.0);
  CHECK(j.at("usable_context") == 512);
  const json& results = j.at("results");
  REQUIRE(results.size() == 2);
  for (size_t i = 0; i < 2; ++i) {
    const json& res = results[i];
    const int64_t context = i == 0 ? 256 : 512;
    CHECK(res.at("context_size") == context);
    CHECK(res.at("trials") == 2);
    const json& details = res.at("details");
    REQUIRE(details.size() == 2);
    int64_t correct = 0;
    double tokens = 0.0;
    for (const json& d : details) {
      const int64_t key = d.at("key");
      CHECK((key >= 1 && key <= 50000));
      const double depth = d.at("depth");
      CHECK((depth >= 0.0 && depth <= 1.0));
      const int64_t prompt_tokens = d.at("prompt_tokens");
      CHECK(prompt_tokens <= context);
      CHECK(prompt_tokens > context - 80);  // filled to within one filler repetition
      const auto answer = d.at("answer_ids").get<std::vector<int32_t>>();
      const auto generated = d.at("generated_ids").get<std::vector<int32_t>>();
      CHECK(generated.size() == answer.size());
      CHECK(d.at("correct").get<bool>() == (generated == answer));
      CHECK(d.at("text").is_string());
      CHECK(d.contains("filler_repeats"));
      correct += d.at("correct").get<bool>() ? 1 : 0;
      tokens += double(prompt_tokens);
    }
    CHECK(res.at("correct") == correct);
    CHECK(res.at("accuracy").get<double>() == doctest::Approx(double(correct) / 2.0));
    CHECK(res.at("prompt_tokens_mean").get<double>() == doctest::Approx(tokens / 2.0));
    // The table row: context, mean prompt tokens, trials, correct, accuracy.
    CHECK(contains(r.out, fmt::format("{:>9}  {:>13.1f}  {:>6}  {:>7}  {:>7.1f}%", context,
                                      tokens / 2.0, 2, correct, 50.0 * double(correct))));
  }

  const RunResult again = run_passkey(dir, good_args(b, 7));
  REQUIRE(again.exit_code == 0);
  CHECK(ll::test::read_bytes(a) == ll::test::read_bytes(b));

  const RunResult other = run_passkey(dir, good_args(c, 8));
  REQUIRE(other.exit_code == 0);
  const json k = json::parse(ll::test::read_bytes(c));
  CHECK(k.at("results")[0].at("details")[0].at("key") !=
        j.at("results")[0].at("details")[0].at("key"));
}

// The usable context is checked before the weights load (minutes for 7B): on a copy of the
// model with a NaN in its weights, a context beyond it is reported, not the NaN.
TEST_CASE("passkey: the context check comes before the weights load") {
  TempDir dir("passkey_cli_order");
  const fs::path copy = dir.path / "nan-model";
  ll::test::copy_model_with_nan_weight(kModel, copy);
  const std::string m = "-m '" + copy.string() + "' --device cpu --trials 1 ";
  const RunResult beyond = run_passkey(dir, m + "--context-sizes 256");
  INFO(beyond.err);
  CHECK(beyond.exit_code == 1);
  CHECK(contains(beyond.err, "beyond the model's usable context of 128 tokens"));
  const RunResult fits = run_passkey(dir, m + "--context-sizes 128");
  INFO(fits.err);
  CHECK(fits.exit_code == 1);
  CHECK(contains(fits.err, "NaN"));
}

TEST_CASE("passkey: bad input exits non-zero with a clear message") {
  TempDir dir("passkey_cli_bad");
  auto expect_error = [&](const std::string& args, const std::vector<std::string>& parts,
                          int code = 1) {
    const RunResult r = run_passkey(dir, args);
    INFO(args << "\nstdout: " << r.out << "\nstderr: " << r.err);
    CHECK(r.exit_code == code);
    for (const std::string& part : parts) CHECK(contains(r.err, part));
  };
  const std::string m = "-m '" + kModel + "' --device cpu ";

  expect_error(m + "--context-sizes 12q", {"passkey: error:", "'12q'"});
  expect_error(m + "--context-sizes 1k,abc", {"'abc'"});
  expect_error(m + "--context-sizes 256,256", {"listed twice"});
  expect_error(m + "--context-sizes 256 --trials 0", {"--trials 0"});
  expect_error("-m '" + dir.file("absent") + "' --context-sizes 256", {dir.file("absent")});
  expect_error(m, {"--context-sizes"}, 2);  // usage error
  // 256 is beyond what a model pretrained at 128 is meant for, unless asked for.
  expect_error(m + "--context-sizes 256 --trials 1", {"256", "128", "--allow-beyond-context"});
  expect_error(m + "--context-size 512 --context-sizes 256,1k --trials 1",
               {"1024", "512", "--allow-beyond-context"});
  // Smaller than the prompt without filler.
  expect_error(m + "--context-sizes 20 --trials 1", {"context size 20 is too small"});

  // A model directory without tokenizer.model: the lookup says so; --tokenizer fixes it.
  const fs::path bare = dir.path / "bare";
  fs::create_directories(bare);
  fs::create_symlink(kModel + "/config.json", bare / "config.json");
  fs::create_symlink(kModel + "/model.safetensors", bare / "model.safetensors");
  expect_error("-m '" + bare.string() + "' --device cpu --context-sizes 128 --trials 1",
               {(bare / "tokenizer.model").string(), "--tokenizer"});
  expect_error(
      "-m '" + bare.string() + "' --context-sizes 128 --tokenizer '" + dir.file("nope.model") + "'",
      {dir.file("nope.model")});
  const RunResult fixed = run_passkey(
      dir, "-m '" + bare.string() + "' --device cpu --context-sizes 128 --trials 1 --tokenizer '" +
               kModel + "/tokenizer.model'");
  INFO(fixed.out << fixed.err);
  CHECK(fixed.exit_code == 0);
  // A tokenizer with more pieces (kjv-tiny's 2000) than the model's vocabulary (512) is refused.
  expect_error("-m '" + std::string(LL_SOURCE_DIR) +
                   "/tests/fixtures/tiny_llama' --device cpu "
                   "--context-sizes 128 --tokenizer '" +
                   kModel + "/tokenizer.model'",
               {"2000 pieces", "only 512"});
  // A bigger context with --allow-beyond-context runs (extrapolation).
  const RunResult beyond =
      run_passkey(dir, m + "--context-sizes 256 --trials 1 --allow-beyond-context");
  INFO(beyond.out << beyond.err);
  CHECK(beyond.exit_code == 0);
  CHECK(contains(beyond.out, "      256"));
}
