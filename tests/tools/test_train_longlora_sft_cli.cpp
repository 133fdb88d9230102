// ./train_longlora --sft end to end on the demo model (models/kjv-tiny) and a tiny Alpaca-style
// file: the first step's loss and gradient norm against the Hugging Face Trainer's definition
// recomputed here, learning, truncation/skip warnings, bit-exact resume, and bad input.
#include <doctest/doctest.h>
#include <sys/wait.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "data/sft_dataset.h"
#include "data/tokenizer.h"
#include "engine/train/metrics_log.h"
#include "kernels/attention_pattern.h"
#include "kernels/cpu/cpu_backend.h"
#include "model/formats/tensor_source.h"
#include "model/llama_model.h"
#include "model/llama_weights.h"
#include "model/lora_config.h"
#include "tests/test_paths.h"

namespace {

namespace fs = std::filesystem;

struct RunResult {
  int exit_code;
  std::string output;
};

RunResult run(const std::string& args, const fs::path& log_dir) {
  const std::string log = (log_dir / "log.txt").string();
  // The CPU backend: these runs are compared with fp32 computations here.
  const std::string cmd =
      ll::test::binary_path("train_longlora") + " --device cpu " + args + " > " + log + " 2>&1";
  const int status = std::system(cmd.c_str());
  REQUIRE(WIFEXITED(status));  // a signal (crash) fails the test
  std::ifstream f(log);
  std::stringstream ss;
  ss << f.rdbuf();
  return {WEXITSTATUS(status), ss.str()};
}

std::string read_bytes(const fs::path& path) {
  std::ifstream f(path, std::ios::binary);
  REQUIRE(f.good());
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

const std::string kModel = ll::test::source_path("models/kjv-tiny");
const std::string kData = ll::test::source_path("tests/fixtures/sft/tiny_alpaca.json");

// -ctx 128 (the model's own length, factor 1): of the fixture's 9 records, the two with an
// input have a system prompt longer than 128 tokens (skipped) and the last one an answer cut
// at 128 tokens, so 7 examples remain.
std::string base_args(const fs::path& out) {
  return "-m " + kModel + " --sft " + kData + " -ctx 128 --lr 1e-2 --warmup 0 --seed 3 --out " +
         out.string();
}

// What the first optimizer step sees, computed here as the Hugging Face Trainer defines it:
// every kept example's mean loss over its labelled tokens, averaged over the step's examples,
// and the gradient of that average.
struct FirstStep {
  double loss = 0.0, grad_norm = 0.0, pooled_loss = 0.0;
};
FirstStep first_step_reference(uint64_t seed) {
  const ll::Tokenizer tok(kModel + "/tokenizer.model");
  const ll::SftDataset ds = ll::build_sft_dataset(ll::read_sft_records(kData), tok, 128, kData);
  REQUIRE(ds.examples.size() == 7);
  ll::CpuBackend backend;
  const ll::LlamaWeights weights = ll::load_llama_weights(*ll::open_model_files(kModel));
  ll::ModelSetup setup;  // train_longlora's defaults: LoRA r 8 alpha 16 on q,k,v,o + embed,norm
  setup.lora = ll::LoraConfig{};
  setup.lora->rank = 8;
  setup.lora->alpha = 16.0;
  setup.lora->targets = ll::parse_lora_targets("q_proj,k_proj,v_proj,o_proj");
  setup.trainable = ll::parse_trainable("embed,norm");
  setup.seed = seed;
  setup.training = true;
  ll::LlamaModel model(backend, weights, setup);
  const double accum = double(ds.examples.size());
  FirstStep ref;
  double pooled_sum = 0.0;
  int64_t pooled_count = 0;
  model.zero_grads();
  for (const ll::SftExample& ex : ds.examples) {
    const int64_t n = int64_t(ex.tokens.size());
    ll::ForwardSpec spec;
    spec.attn_mode = ll::AttnMode::S2;
    spec.group_size = ll::s2_group_size(n, 0.25);
    // The example's loss from the evaluation path: next-token losses at the labelled positions.
    const std::vector<float> losses = model.next_token_losses(ex.tokens, spec);
    const std::vector<int32_t> targets = ll::sft_targets(ex);
    double sum = 0.0;
    int64_t count = 0;
    for (int64_t t = 0; t + 1 < n; ++t) {
      if (targets[size_t(t)] < 0) continue;
      sum += losses[size_t(t)];
      ++count;
    }
    REQUIRE(count == ex.labelled());
    ref.loss += sum / double(count) / accum;
    pooled_sum += sum;
    pooled_count += count;
    model.forward_backward(ex.tokens, targets, spec, float(1.0 / (double(count) * accum)));
  }
  ref.pooled_loss = pooled_sum / double(pooled_count);
  double g2 = 0.0;
  for (const ll::TrainableParam& p : model.params()) {
    std::vector<float> g(size_t(p.grad->numel()));
    backend.download_f32(g.data(), *p.grad);
    for (float x : g) g2 += double(x) * double(x);
  }
  ref.grad_norm = std::sqrt(g2);
  return ref;
}

}  // namespace

TEST_CASE("--sft: the loss of answer tokens as the HF Trainer averages it, and it goes down") {
  const fs::path dir = ll::test::fresh_temp_dir("train_sft_cli");
  // --shuffle off and one step = every example: each step's loss is the mean answer loss of
  // the whole file under the weights of that step.
  const auto r = run(base_args(dir / "o") + " --steps 6 --grad-accum 7 --shuffle off", dir);
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(contains(r.output, "warning: 1 of 9 records are longer than -ctx 128 and were truncated"));
  CHECK(contains(r.output, "warning: 2 of 9 records were skipped"));
  CHECK(contains(r.output, "sft " + kData +
                               ": 9 records (2 skipped: prompt of -ctx tokens or "
                               "more; 1 truncated to -ctx), 7 examples per epoch"));
  CHECK(contains(r.output, "lengths min/median/max"));
  CHECK(contains(r.output, "7 examples per step"));
  for (const char* f : {"adapter_model.safetensors", "trainable_params.safetensors"})
    CHECK_MESSAGE(fs::exists(dir / "o" / f), f);

  const auto steps = ll::MetricsLog::read_steps((dir / "o/metrics.jsonl").string());
  REQUIRE(steps.size() == 6);
  const FirstStep ref = first_step_reference(3);
  CHECK(steps[0].loss == doctest::Approx(ref.loss).epsilon(1e-5));
  CHECK(steps[0].grad_norm == doctest::Approx(ref.grad_norm).epsilon(1e-4));
  // The pooled mean over all answer tokens is a different number here (one long answer).
  CHECK(std::fabs(ref.pooled_loss - ref.loss) > 0.05);
  // Labelled tokens are counted; tokens/s counts the examples' real tokens.
  CHECK(steps[0].tokens > 0);
  CHECK(steps[1].tokens == 2 * steps[0].tokens);
  CHECK(steps.back().loss < 0.75 * steps[0].loss);  // it learns the answers
}

TEST_CASE("--sft resumes bit for bit (shuffled, steps across epoch boundaries)") {
  const fs::path dir = ll::test::fresh_temp_dir("train_sft_cli_resume");
  const std::string args = " --grad-accum 3 --shuffle on";  // 7 examples: epochs end mid-step
  const auto a = run(base_args(dir / "a") + args + " --steps 5", dir);
  INFO(a.output);
  REQUIRE(a.exit_code == 0);
  const auto b1 = run(base_args(dir / "b") + args + " --steps 2", dir);
  INFO(b1.output);
  REQUIRE(b1.exit_code == 0);
  const auto b2 = run(base_args(dir / "b") + args + " --steps 5 --resume", dir);
  INFO(b2.output);
  REQUIRE(b2.exit_code == 0);
  CHECK(contains(b2.output, "resume         from"));
  const auto steps_a = ll::MetricsLog::read_steps((dir / "a/metrics.jsonl").string());
  const auto steps_b = ll::MetricsLog::read_steps((dir / "b/metrics.jsonl").string());
  REQUIRE(steps_a.size() == 5);
  REQUIRE(steps_b.size() == 5);
  for (size_t i = 0; i < 5; ++i) {
    CAPTURE(i);
    CHECK(steps_b[i].loss == steps_a[i].loss);
    CHECK(steps_b[i].grad_norm == steps_a[i].grad_norm);
    CHECK(steps_b[i].tokens == steps_a[i].tokens);
    CHECK(steps_b[i].epoch == steps_a[i].epoch);
  }
  CHECK(steps_a.back().epoch == 2);  // 15 examples from 7
  for (const char* f : {"adapter_model.safetensors", "trainable_params.safetensors"}) {
    CAPTURE(f);
    CHECK(read_bytes(dir / "a" / f) == read_bytes(dir / "b" / f));
  }
}

TEST_CASE("--sft rejects bad input with a clear message") {
  const fs::path dir = ll::test::fresh_temp_dir("train_sft_cli_bad");
  auto expect_error = [&](const std::string& args, const std::vector<std::string>& parts) {
    const auto r = run(args, dir);
    INFO(r.output);
    CHECK(r.exit_code != 0);
    CHECK(r.exit_code != 139);
    for (const std::string& part : parts)
      CHECK_MESSAGE(contains(r.output, part), "expected: " << part);
  };
  auto write = [&](const std::string& name, const std::string& text) {
    std::ofstream(dir / name) << text;
    return (dir / name).string();
  };
  auto args_with = [&](const std::string& data) {
    return "-m " + kModel + " --sft " + data + " -ctx 128 --steps 1 --out " + (dir / "o").string();
  };

  SUBCASE("malformed JSON names the line") {
    const std::string bad = write("bad.json",
                                  "[\n  {\"instruction\": \"Q\", \"output\": \"A\"},\n"
                                  "  {\"instruction\": \"Q\" \"output\": \"A\"}\n]\n");
    expect_error(args_with(bad), {bad + ":3:", "malformed JSON"});
  }
  SUBCASE("a missing field names the record and the field") {
    const std::string bad = write("missing.jsonl",
                                  "{\"instruction\": \"Q\", \"output\": \"A\"}\n"
                                  "{\"instruction\": \"Q\", \"input\": \"x\"}\n");
    expect_error(args_with(bad), {bad + ":2: record 1", "missing \"output\""});
  }
  SUBCASE("--sft and --data together") {
    expect_error(args_with(kData) + " --data x.shard", {"--sft and --data are mutually exclusive"});
  }
  SUBCASE("the YAML key sft is read like the flag") {
    const std::string cfg = write("run.yaml", "sft: " + (dir / "nope.json").string() + "\n");
    expect_error(
        "-m " + kModel + " --config " + cfg + " -ctx 128 --steps 1 --out " + (dir / "o").string(),
        {(dir / "nope.json").string() + ": no such file"});
  }
  SUBCASE("--tokenizer is for --sft") {
    expect_error("-m " + kModel + " --data x.shard --tokenizer " + kModel +
                     "/tokenizer.model -ctx 128 --steps 1",
                 {"--tokenizer is for --sft"});
  }
  SUBCASE("neither --sft nor --data") {
    expect_error("-m " + kModel + " -ctx 128 --steps 1", {"--data or --sft is required"});
  }
  SUBCASE("no tokenizer next to the model; --tokenizer fixes it") {
    const fs::path model = dir / "model";
    fs::create_directories(model);
    fs::copy_file(kModel + "/config.json", model / "config.json");
    fs::copy_file(kModel + "/model.safetensors", model / "model.safetensors");
    const std::string args = "-m " + model.string() + " --sft " + kData +
                             " -ctx 128 --steps 1 --grad-accum 1 --out " + (dir / "t").string();
    expect_error(args, {"tokenizer.model", "--tokenizer"});
    const auto ok = run(args + " --tokenizer " + kModel + "/tokenizer.model", dir);
    INFO(ok.output);
    CHECK(ok.exit_code == 0);
  }
  SUBCASE("every record skipped") {
    expect_error("-m " + kModel + " --sft " + kData + " -ctx 8 --full-attn --steps 1 --out " +
                     (dir / "o").string(),
                 {kData, "none of its 9 records", "-ctx"});
  }
  SUBCASE("an SFT run does not continue a pretraining checkpoint") {
    // A pretraining run of one step on a small stream of ids the model knows.
    const fs::path data = dir / "train.bin";
    {
      std::ofstream f(data, std::ios::binary);
      for (int i = 0; i < 128 * 2; ++i) {
        const uint16_t v = uint16_t(3 + (i * 7) % 1000);
        f.write(reinterpret_cast<const char*>(&v), 2);
      }
    }
    const std::string out = (dir / "pre").string();
    const auto pre =
        run("-m " + kModel + " --data " + data.string() +
                " --data-format raw-u16 -ctx 128 --grad-accum 1 --steps 1 --out " + out,
            dir);
    INFO(pre.output);
    REQUIRE(pre.exit_code == 0);
    expect_error("-m " + kModel + " --sft " + kData +
                     " -ctx 128 --grad-accum 1 --steps 2 "
                     "--resume --out " +
                     out,
                 {"cannot resume", "--sft"});
  }
}
