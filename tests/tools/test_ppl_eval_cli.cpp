// ./ppl_eval end to end: on the fixture model and the fixture's token stream it prints and
// writes the Hugging Face reference perplexity; bad input exits 1 with a message.
#include <doctest/doctest.h>
#include <sys/wait.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "model/formats/safetensors.h"
#include "tests/test_paths.h"

namespace {

struct RunResult {
  int exit_code;
  std::string output;
};

RunResult run(const std::string& args, const std::filesystem::path& dir) {
  const std::string log = (dir / "log.txt").string();
  const std::string cmd =
      ll::test::binary_path("ppl_eval") + " --device cpu " + args + " > " + log + " 2>&1";
  const int status = std::system(cmd.c_str());
  REQUIRE(WIFEXITED(status));  // a signal (crash) fails the test
  std::ifstream f(log);
  std::stringstream ss;
  ss << f.rdbuf();
  return {WEXITSTATUS(status), ss.str()};
}

void write_u16(const std::filesystem::path& path, const std::vector<int32_t>& tokens) {
  std::ofstream f(path, std::ios::binary);
  for (int32_t t : tokens) {
    const uint16_t v = uint16_t(t);
    f.write(reinterpret_cast<const char*>(&v), 2);
  }
}

}  // namespace

TEST_CASE("ppl_eval reproduces the reference perplexity and reports bad input") {
  const auto dir = ll::test::fresh_temp_dir("ppl_eval_cli");
  const ll::SafetensorsFile fx = ll::read_safetensors(
      ll::test::source_path("tests/fixtures/tiny_llama_reference.safetensors"));
  std::vector<int32_t> tokens = fx.read_i32("tokens");
  write_u16(dir / "tokens.bin", tokens);
  const std::string model = ll::test::source_path("tests/fixtures/tiny_llama");

  SUBCASE("paper protocol") {
    const auto r =
        run("-m " + model + " --data " + (dir / "tokens.bin").string() +
                " --data-format raw-u16 --seq-len 64 --json " + (dir / "out.json").string(),
            dir);
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    nlohmann::json j;
    std::ifstream(dir / "out.json") >> j;
    const double ref = fx.read_f32("paper_s64_ppl")[0];
    CHECK(std::fabs(j["ppl"].get<double>() - ref) / ref <= 1e-5);
    CHECK(j["protocol"] == "paper");
    CHECK(j["windows"] == 4);
    CHECK(j["tokens_scored"] == 4 * 63);
    CHECK(j["seq_len"] == 64);
    CHECK(r.output.find("perplexity") != std::string::npos);
  }
  SUBCASE("token tiles (a ragged last tile) give the reference perplexity too") {
    const auto r = run("-m " + model + " --data " + (dir / "tokens.bin").string() +
                           " --data-format raw-u16 --seq-len 64 --tile-tokens 24 --json " +
                           (dir / "tiled.json").string(),
                       dir);
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    nlohmann::json j;
    std::ifstream(dir / "tiled.json") >> j;
    const double ref = fx.read_f32("paper_s64_ppl")[0];
    CHECK(std::fabs(j["ppl"].get<double>() - ref) / ref <= 1e-5);
  }
  SUBCASE("a token outside the vocabulary") {
    tokens[700] = 600;  // vocab is 512
    write_u16(dir / "bad.bin", tokens);
    const auto r = run("-m " + model + " --data " + (dir / "bad.bin").string() +
                           " --data-format raw-u16 --seq-len 64",
                       dir);
    INFO(r.output);
    CHECK(r.exit_code == 1);
    CHECK(r.output.find("bad.bin") != std::string::npos);
    CHECK(r.output.find("600") != std::string::npos);
  }
  SUBCASE("data too short for one window") {
    const auto r = run("-m " + model + " --data " + (dir / "tokens.bin").string() +
                           " --data-format raw-u16 --seq-len 1000",
                       dir);
    CHECK(r.exit_code == 1);
    CHECK(r.output.find("needs more than") != std::string::npos);
  }
  SUBCASE("a missing model") {
    const auto r = run("-m " + (dir / "nope").string() + " --data " +
                           (dir / "tokens.bin").string() + " --data-format raw-u16 --seq-len 64",
                       dir);
    CHECK(r.exit_code == 1);
    CHECK(r.output.find("nope") != std::string::npos);
  }
}

TEST_CASE("ppl_eval --lora applies a PEFT adapter: the loss equals peft's") {
  // The training fixture's "dense" case: base model + the PEFT adapter in
  // tests/fixtures/tiny_llama_peft_adapter, full attention, one sequence of 64 tokens.
  const auto dir = ll::test::fresh_temp_dir("ppl_eval_lora");
  const ll::SafetensorsFile fx = ll::read_safetensors(
      ll::test::source_path("tests/fixtures/tiny_llama_lora_reference.safetensors"));
  const std::vector<int32_t> tokens = fx.read_i32("dense.tokens");
  REQUIRE(tokens.size() == 64);
  write_u16(dir / "tokens.bin", tokens);
  const std::string model = ll::test::source_path("tests/fixtures/tiny_llama");
  const std::string adapter = ll::test::source_path("tests/fixtures/tiny_llama_peft_adapter");
  const std::string common = " --data " + (dir / "tokens.bin").string() +
                             " --data-format raw-u16 --seq-len 64 --protocol non-overlapping";
  const auto r =
      run("-m " + model + " --lora " + adapter + common + " --json " + (dir / "lora.json").string(),
          dir);
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(r.output.find("adapter") != std::string::npos);
  nlohmann::json j;
  std::ifstream(dir / "lora.json") >> j;
  const double ref_loss = fx.read_f32("dense.loss")[0];
  CHECK(std::fabs(j["mean_loss"].get<double>() - ref_loss) <= 1e-5 * ref_loss);
  // Without the adapter the loss differs: the adapter was applied.
  const auto base = run("-m " + model + common + " --json " + (dir / "base.json").string(), dir);
  REQUIRE(base.exit_code == 0);
  nlohmann::json jb;
  std::ifstream(dir / "base.json") >> jb;
  CHECK(std::fabs(jb["mean_loss"].get<double>() - ref_loss) > 1e-3);
  // An adapter for another model is refused with a message.
  const auto bad = run("-m " + ll::test::source_path("tests/fixtures/tiny_llama_rope2") +
                           " --lora " + adapter + common,
                       dir);
  CHECK(bad.exit_code == 1);
  CHECK(bad.output.find("adapter") != std::string::npos);
}

TEST_CASE("ppl_eval takes the position interpolation factor from the adapter's longlora.json") {
  const auto dir = ll::test::fresh_temp_dir("ppl_eval_longlora");
  const ll::SafetensorsFile fx = ll::read_safetensors(
      ll::test::source_path("tests/fixtures/tiny_llama_lora_reference.safetensors"));
  write_u16(dir / "tokens.bin", fx.read_i32("dense.tokens"));
  const std::string model = ll::test::source_path("tests/fixtures/tiny_llama");
  const std::string peft = ll::test::source_path("tests/fixtures/tiny_llama_peft_adapter");
  // The PEFT adapter plus the record train_longlora writes: trained at 256 tokens, factor 2.
  const auto adapter = dir / "adapter";
  std::filesystem::create_directories(adapter);
  for (const char* f : {"adapter_config.json", "adapter_model.safetensors"})
    std::filesystem::copy_file(std::filesystem::path(peft) / f, adapter / f);
  std::ofstream(adapter / "longlora.json")
      << R"({"format": "longlora-adapter", "version": 1, "rope_scaling": {"type": "linear", )"
      << R"("factor": 2.0}, "context_length": 256})";
  const std::string common = " --data " + (dir / "tokens.bin").string() +
                             " --data-format raw-u16 --seq-len 64 --protocol non-overlapping";
  auto eval = [&](const std::string& args, const std::string& name) {
    const auto r =
        run("-m " + model + common + " " + args + " --json " + (dir / name).string(), dir);
    INFO(r.output);
    REQUIRE(r.exit_code == 0);
    nlohmann::json j;
    std::ifstream(dir / name) >> j;
    return std::make_pair(j, r.output);
  };
  const auto [from_record, log] = eval("--lora " + adapter.string(), "record.json");
  CHECK(from_record["position_interpolation_factor"] == 2.0);
  CHECK(log.find("longlora.json") != std::string::npos);
  // The same numbers as the factor given by hand; different from the config's factor 1.
  const auto [by_hand, log2] = eval("--lora " + peft + " --rope-factor 2", "hand.json");
  CHECK(by_hand["position_interpolation_factor"] == 2.0);
  CHECK(from_record["mean_loss"].get<double>() == by_hand["mean_loss"].get<double>());
  const auto [plain, log3] = eval("--lora " + peft, "plain.json");
  CHECK(plain["position_interpolation_factor"] == 1.0);
  CHECK(std::fabs(plain["mean_loss"].get<double>() - from_record["mean_loss"].get<double>()) >
        1e-4);
  // --context-size wins over the record (64 is within max_position_embeddings: factor 1).
  const auto [sized, log4] =
      eval("--lora " + adapter.string() + " --context-size 64", "sized.json");
  CHECK(sized["position_interpolation_factor"] == 1.0);
  CHECK(sized["mean_loss"].get<double>() == plain["mean_loss"].get<double>());
  // A factor below 1 is refused.
  const auto bad = run("-m " + model + common + " --rope-factor 0.5", dir);
  CHECK(bad.exit_code == 1);
  CHECK(bad.output.find("--rope-factor") != std::string::npos);
}
