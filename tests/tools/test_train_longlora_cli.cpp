// ./train_longlora end to end on the fixture model: outputs, bit-exact resume in a new
// process, survival of SIGKILL during checkpointing, and clear errors for bad input.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "engine/train/checkpoint.h"
#include "engine/train/metrics_log.h"
#include "model/formats/adapter_io.h"
#include "tests/test_paths.h"

namespace {

namespace fs = std::filesystem;

struct RunResult {
  int exit_code;
  std::string output;
};

RunResult run(const std::string& args, const fs::path& log_dir) {
  const std::string log = (log_dir / "log.txt").string();
  // The CPU backend unless a test names one: these tests compare against fp32 references.
  const std::string device = args.find("--device") == std::string::npos ? " --device cpu " : " ";
  const std::string cmd =
      ll::test::binary_path("train_longlora") + device + args + " > " + log + " 2>&1";
  const int status = std::system(cmd.c_str());
  REQUIRE(WIFEXITED(status));  // a signal (crash) fails the test
  std::ifstream f(log);
  std::stringstream ss;
  ss << f.rdbuf();
  return {WEXITSTATUS(status), ss.str()};
}

void write_u16(const fs::path& path, const std::vector<int32_t>& tokens) {
  std::ofstream f(path, std::ios::binary);
  for (int32_t t : tokens) {
    const uint16_t v = uint16_t(t);
    f.write(reinterpret_cast<const char*>(&v), 2);
  }
}

std::string read_bytes(const fs::path& path) {
  std::ifstream f(path, std::ios::binary);
  REQUIRE(f.good());
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

const std::string kModel = ll::test::source_path("tests/fixtures/tiny_llama");

// A run's fixed options: tiny model (max_position_embeddings 128) extended to 256 tokens
// (interpolation factor 2), S2-Attn with G = 64, 2 windows per step, a warmup of 2 steps.
std::string base_args(const fs::path& data, const fs::path& out) {
  return "-m " + kModel + " --data " + data.string() +
         " --data-format raw-u16 -ctx 256 --grad-accum 2 --lr 1e-3 --warmup 2 --seed 7 --out " +
         out.string();
}

fs::path make_data(const fs::path& dir, size_t n_tokens, int32_t max_id = 511) {
  std::mt19937 rng(123);
  std::uniform_int_distribution<int32_t> tok(3, max_id);
  std::vector<int32_t> tokens(n_tokens);
  // A learnable stream: mostly a repeating pattern, some noise.
  for (size_t i = 0; i < n_tokens; ++i)
    tokens[i] = (i % 7 == 0) ? tok(rng) : int32_t(3 + (i * 5) % 40);
  const fs::path path = dir / "train.bin";
  write_u16(path, tokens);
  return path;
}

}  // namespace

TEST_CASE("train_longlora trains, writes PEFT outputs and resumes bit for bit") {
  const fs::path dir = ll::test::fresh_temp_dir("train_cli");
  const fs::path data = make_data(dir, 256 * 9);  // 9 windows: the run wraps into epoch 2

  // 10 steps straight.
  const auto a = run(base_args(data, dir / "a") + " --steps 10", dir);
  INFO(a.output);
  REQUIRE(a.exit_code == 0);
  CHECK(a.output.find("rope linear (factor 2)") != std::string::npos);
  CHECK(a.output.find("S2-Attn group 64") != std::string::npos);
  for (const char* f : {"adapter_model.safetensors", "adapter_config.json",
                        "trainable_params.safetensors", "metrics.jsonl", "loss_curve.svg"}) {
    CHECK_MESSAGE(fs::exists(dir / "a" / f), f);
  }
  REQUIRE(ll::latest_checkpoint((dir / "a").string()).has_value());
  const ll::AdapterDir adapter = ll::read_adapter_dir((dir / "a").string());
  CHECK(adapter.lora_tensors.size() == 16);     // 2 layers x q,k,v,o x A,B
  CHECK(adapter.trainable_params.size() == 6);  // embeddings + 5 norms
  CHECK(adapter.lora_tensors.count(
            "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight") == 1);
  REQUIRE(adapter.longlora.has_value());  // longlora.json: what export_hf puts in config.json
  CHECK(adapter.longlora->rope == ll::linear_rope_scaling(2.0));
  CHECK(adapter.longlora->context_length == 256);
  const auto steps_a = ll::MetricsLog::read_steps((dir / "a/metrics.jsonl").string());
  REQUIRE(steps_a.size() == 10);
  CHECK(steps_a[0].lr == 0.0);                   // warmup starts at 0 as in HF's schedulers
  CHECK(steps_a.back().loss < steps_a[1].loss);  // it learns the pattern
  CHECK(steps_a.back().epoch == 2);              // 20 windows from 9: epochs are counted

  // 5 steps, then a new process resumes to 10.
  const auto b1 = run(base_args(data, dir / "b") + " --steps 5", dir);
  INFO(b1.output);
  REQUIRE(b1.exit_code == 0);
  const auto b2 = run(base_args(data, dir / "b") + " --steps 10 --resume", dir);
  INFO(b2.output);
  REQUIRE(b2.exit_code == 0);
  CHECK(b2.output.find("resume         from") != std::string::npos);
  const auto steps_b = ll::MetricsLog::read_steps((dir / "b/metrics.jsonl").string());
  REQUIRE(steps_b.size() == 10);
  for (size_t i = 0; i < 10; ++i) {
    CAPTURE(i);
    CHECK(steps_b[i].loss == steps_a[i].loss);  // bit for bit
    CHECK(steps_b[i].grad_norm == steps_a[i].grad_norm);
  }
  for (const char* f : {"adapter_model.safetensors", "trainable_params.safetensors"}) {
    CAPTURE(f);
    CHECK(read_bytes(dir / "a" / f) == read_bytes(dir / "b" / f));
  }
}

TEST_CASE("--sharded-optimizer in a world of one is the plain run bit for bit; checkpoints mix") {
  // The data-parallel step (bucketed reduction from the backward hook, sharded AdamW, gathered
  // parameters) with one rank is a copy at every collective: nothing may change.
  const fs::path dir = ll::test::fresh_temp_dir("train_cli_sharded");
  const fs::path data = make_data(dir, 256 * 5);
  const auto plain = run(base_args(data, dir / "plain") + " --steps 6", dir);
  INFO(plain.output);
  REQUIRE(plain.exit_code == 0);
  const auto sharded =
      run(base_args(data, dir / "sharded") + " --steps 6 --sharded-optimizer", dir);
  INFO(sharded.output);
  REQUIRE(sharded.exit_code == 0);
  CHECK(sharded.output.find("data parallel  1 rank (single process; collectives: single process "
                            "(host memory))") != std::string::npos);
  // Half of each: a plain run resumed by a sharded one, and the reverse.
  for (const char* first : {"", " --sharded-optimizer"}) {
    const std::string second = *first == 0 ? " --sharded-optimizer" : "";
    const fs::path out = dir / (*first == 0 ? "plain_then_sharded" : "sharded_then_plain");
    const auto a = run(base_args(data, out) + " --steps 3" + first, dir);
    INFO(a.output);
    REQUIRE(a.exit_code == 0);
    const auto b = run(base_args(data, out) + " --steps 6 --resume" + second, dir);
    INFO(b.output);
    REQUIRE(b.exit_code == 0);
  }
  const auto reference = ll::MetricsLog::read_steps((dir / "plain/metrics.jsonl").string());
  REQUIRE(reference.size() == 6);
  for (const char* name : {"sharded", "plain_then_sharded", "sharded_then_plain"}) {
    CAPTURE(name);
    const auto steps = ll::MetricsLog::read_steps((dir / name / "metrics.jsonl").string());
    REQUIRE(steps.size() == 6);
    for (size_t i = 0; i < 6; ++i) {
      CAPTURE(i);
      CHECK(steps[i].loss == reference[i].loss);
      CHECK(steps[i].grad_norm == reference[i].grad_norm);
    }
    for (const char* f : {"adapter_model.safetensors", "trainable_params.safetensors"}) {
      CAPTURE(f);
      CHECK(read_bytes(dir / "plain" / f) == read_bytes(dir / name / f));
    }
  }
  // The checkpoint of a sharded world of one is the single-process format, moments included.
  const ll::Checkpoint ck = ll::read_checkpoint(*ll::latest_checkpoint((dir / "sharded").string()));
  CHECK(ck.shards.empty());
  CHECK(ck.moments.exp_avg.size() == 22);
  const ll::Checkpoint ref = ll::read_checkpoint(*ll::latest_checkpoint((dir / "plain").string()));
  for (const auto& [name, m] : ref.moments.exp_avg) {
    CAPTURE(name);
    REQUIRE(ck.moments.exp_avg.count(name) == 1);
    CHECK(ck.moments.exp_avg.at(name).values == m.values);
    CHECK(ck.moments.exp_avg_sq.at(name).values == ref.moments.exp_avg_sq.at(name).values);
  }
}

TEST_CASE("--init-adapter starts from a PEFT adapter directory") {
  const fs::path dir = ll::test::fresh_temp_dir("train_cli_init");
  const fs::path data = make_data(dir, 256 * 3);
  const std::string peft = ll::test::source_path("tests/fixtures/tiny_llama_peft_adapter");
  // One step with warmup: its learning rate is 0, so the output is the starting adapter.
  const auto r = run(base_args(data, dir / "o") + " --steps 1 --init-adapter " + peft, dir);
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  const ll::AdapterDir start = ll::read_adapter_dir(peft);
  const ll::AdapterDir out = ll::read_adapter_dir((dir / "o").string());
  REQUIRE(start.lora_tensors.size() == out.lora_tensors.size());
  for (const auto& [name, t] : start.lora_tensors) {
    CAPTURE(name);
    REQUIRE(out.lora_tensors.count(name) == 1);
    CHECK(out.lora_tensors.at(name).values == t.values);
  }
  // A rank that differs from the adapter's is refused.
  const auto bad =
      run(base_args(data, dir / "o2") + " --steps 1 --lora-rank 4 --init-adapter " + peft, dir);
  CHECK(bad.exit_code == 1);
  CHECK(bad.output.find("rank") != std::string::npos);
}

TEST_CASE("--lora-rank 0 --trainable all trains every tensor (pretraining)") {
  const fs::path dir = ll::test::fresh_temp_dir("train_cli_full");
  const fs::path data = make_data(dir, 256 * 3);
  const auto r = run(base_args(data, dir / "o") + " --steps 2 --lora-rank 0 --trainable all", dir);
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  CHECK(!fs::exists(dir / "o/adapter_model.safetensors"));
  const ll::AdapterDir out = ll::read_adapter_dir((dir / "o").string());
  CHECK(out.lora_tensors.empty());
  // Every tensor of the 2-layer model: embeddings, 9 per layer, final norm, lm_head.
  CHECK(out.trainable_params.size() == 1 + 2 * 9 + 1 + 1);
  CHECK(out.trainable_params.count("lm_head.weight") == 1);
  // Without --trainable all there would be nothing to train.
  const auto bad = run(base_args(data, dir / "o2") + " --steps 1 --lora-rank 0", dir);
  CHECK(bad.exit_code != 0);
  CHECK(bad.output.find("--trainable all") != std::string::npos);
}

TEST_CASE("a run killed with SIGKILL while checkpointing resumes from the last good checkpoint") {
  const fs::path dir = ll::test::fresh_temp_dir("train_cli_kill");
  const fs::path data = make_data(dir, 256 * 9);
  const auto straight = run(base_args(data, dir / "ref") + " --steps 8", dir);
  INFO(straight.output);
  REQUIRE(straight.exit_code == 0);

  std::mt19937 rng(std::random_device{}());
  for (int trial = 0; trial < 2; ++trial) {
    const fs::path out = dir / ("killed" + std::to_string(trial));
    const std::string args =
        base_args(data, out) + " --steps 8 --save-every 1 --keep-checkpoints 2";
    const pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      const std::string cmd = ll::test::binary_path("train_longlora") + " --device cpu " + args +
                              " > " + (out.string() + ".log") + " 2>&1";
      execl("/bin/sh", "sh", "-c", ("exec " + cmd).c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    // Wait for a checkpoint or two, then kill at a random moment (often mid-write: every step
    // writes one).
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    while (!fs::exists(out / "checkpoint-00000002") &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    std::this_thread::sleep_for(
        std::chrono::milliseconds(std::uniform_int_distribution<int>(0, 300)(rng)));
    kill(pid, SIGKILL);
    int status = 0;
    waitpid(pid, &status, 0);
    const std::optional<std::string> latest = ll::latest_checkpoint(out.string());
    REQUIRE(latest.has_value());
    CHECK_NOTHROW(ll::read_checkpoint(*latest));
    const auto resumed = run(args + " --resume", dir);
    INFO(resumed.output);
    REQUIRE(resumed.exit_code == 0);
    CHECK(read_bytes(dir / "ref/adapter_model.safetensors") ==
          read_bytes(out / "adapter_model.safetensors"));
    CHECK(read_bytes(dir / "ref/trainable_params.safetensors") ==
          read_bytes(out / "trainable_params.safetensors"));
  }
}

TEST_CASE("train_longlora rejects bad input with a clear message") {
  const fs::path dir = ll::test::fresh_temp_dir("train_cli_bad");
  const fs::path data = make_data(dir, 256 * 3);
  auto expect_error = [&](const std::string& args, const std::string& message) {
    const auto r = run(args, dir);
    INFO(r.output);
    CHECK(r.exit_code != 0);
    CHECK(r.exit_code != 139);
    CHECK_MESSAGE(r.output.find(message) != std::string::npos, "expected: " << message);
  };
  SUBCASE("token ids outside the vocabulary") {
    const fs::path bad = dir / "bad_ids";
    fs::create_directories(bad);
    const fs::path big = make_data(bad, 256 * 2, 700);
    expect_error(base_args(big, dir / "o1") + " --steps 1", "vocab");
  }
  SUBCASE("-ctx larger than the data") {
    expect_error("-m " + kModel + " --data " + data.string() +
                     " --data-format raw-u16 -ctx 4096 --steps 1 --out " + (dir / "o2").string(),
                 "-ctx");
  }
  SUBCASE("a group size that does not fit") {
    expect_error(base_args(data, dir / "o3") + " --steps 1 --group-ratio 0.005", "group");
  }
  SUBCASE("a diverging run stops at a NaN with the step named and keeps its checkpoint") {
    const auto r = run("-m " + kModel + " --data " + data.string() +
                           " --data-format raw-u16 -ctx 256 --grad-accum 1 --steps 30 --warmup 0 "
                           "--lr 1e30 --save-every 1 --out " +
                           (dir / "o4").string(),
                       dir);
    INFO(r.output);
    CHECK(r.exit_code == 1);
    CHECK(r.output.find("step ") != std::string::npos);
    CHECK(r.output.find("finite") != std::string::npos);
    const auto latest = ll::latest_checkpoint((dir / "o4").string());
    if (latest) CHECK_NOTHROW(ll::read_checkpoint(*latest));
  }
  SUBCASE("resume from a checkpoint of another model") {
    const auto ok = run(base_args(data, dir / "o5") + " --steps 1", dir);
    INFO(ok.output);
    REQUIRE(ok.exit_code == 0);
    const std::string other = ll::test::source_path("tests/fixtures/tiny_llama_rope2");
    expect_error("-m " + other + " --data " + data.string() +
                     " --data-format raw-u16 -ctx 256 --steps 2 --seed 7 --resume --out " +
                     (dir / "o5").string(),
                 "another base model");
  }
}

TEST_CASE("--dry-run prints the memory plan from config.json alone") {
  const fs::path dir = ll::test::fresh_temp_dir("train_cli_dry");
  fs::create_directories(dir / "cfg");
  fs::copy_file(kModel + "/config.json", dir / "cfg/config.json");  // no weights, no data
  const auto r = run("-m " + (dir / "cfg").string() + " -ctx 100000 --device cuda --dry-run", dir);
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  for (const char* part :
       {"frozen weights", "trained parameters", "AdamW moments", "saved activations",
        "attention tensors", "token tiles", "cuBLASLt workspace", "total (peak)", "step phases",
        "host (pinned)", "BF16", "activations    no activation offload, whole tensors"}) {
    CHECK_MESSAGE(r.output.find(part) != std::string::npos, part);
  }
  // 2 layers x [100000, 64] bf16 block inputs.
  CHECK(r.output.find("2 block inputs [100000, 64] BF16") != std::string::npos);
}

TEST_CASE("--dry-run --device-memory: the plan chooses offload and tiles, or says what would fit") {
  const fs::path dir = ll::test::fresh_temp_dir("train_cli_dry_budget");
  fs::create_directories(dir / "cfg");
  // The tiny model with 8 layers: offloading some of them saves memory
  // (model/saved_block_inputs.h).
  nlohmann::json cfg = nlohmann::json::parse(read_bytes(kModel + "/config.json"));
  cfg["num_hidden_layers"] = 8;
  std::ofstream(dir / "cfg/config.json") << cfg.dump(2);
  const std::string model = "-m " + (dir / "cfg").string() + " --device cuda --dry-run";
  // Without a limit: no offload, whole tensors.
  auto r = run(model + " -ctx 100000", dir);
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  const auto total_of = [](const std::string& out) {
    const size_t at = out.find("total (peak)");
    REQUIRE(at != std::string::npos);
    return out.substr(at, out.find('\n', at) - at);
  };
  const std::string unlimited = total_of(r.output);
  // A card too small for that: tiles first (no offload), then offload as well.
  r = run(model + " -ctx 100000 --device-memory 300MB", dir);
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK(r.output.find("activations    no activation offload, token tiles of") != std::string::npos);
  r = run(model + " -ctx 100000 --device-memory 200MB", dir);
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK(r.output.find("activations    block inputs of 4 of 8 layers in host memory") !=
        std::string::npos);
  CHECK(r.output.find("offload staging") != std::string::npos);
  // Offload off on that card: nothing fits; the tool says what would, and exits non-zero.
  r = run(model + " -ctx 100000 --device-memory 200MB --offload-activations off", dir);
  INFO(r.output);
  CHECK(r.exit_code != 0);
  CHECK(r.output.find("does not fit") != std::string::npos);
  CHECK(r.output.find("--offload-activations auto: with 7 layers' inputs in host memory") !=
        std::string::npos);
  CHECK(r.output.find("fewer tokens: -ctx") != std::string::npos);
  // Offload needs host memory: with too little, the plan says how much.
  r = run(model + " -ctx 100000 --device-memory 200MB --host-memory 10MB", dir);
  INFO(r.output);
  CHECK(r.exit_code != 0);
  CHECK(r.output.find("more host memory: offloading 7 layers' inputs needs") != std::string::npos);
  CHECK(total_of(run(model + " -ctx 100000", dir).output) == unlimited);
}

TEST_CASE("bad activation settings fail before any weight is loaded") {
  const fs::path dir = ll::test::fresh_temp_dir("train_cli_bad_schedule");
  const fs::path data = make_data(dir, 256 * 4);
  for (const auto& [flags, message] : std::vector<std::pair<std::string, std::string>>{
           {"--tile-tokens 0", "--tile-tokens must be auto or a number of tokens from 1 to -ctx"},
           {"--tile-tokens 257", "--tile-tokens must be auto or a number of tokens from 1 to -ctx"},
           {"--tile-tokens lots", "--tile-tokens must be auto"},
           {"--device-memory 80XB", "--device-memory: \"80XB\" is not a size"},
           {"--offload-activations on --host-memory 1KB",
            "more host memory: offloading 1 layers' inputs needs"},
       }) {
    CAPTURE(flags);
    // A model directory with a config and no weights: the run must stop before reading them.
    fs::create_directories(dir / "cfg");
    fs::copy_file(kModel + "/config.json", dir / "cfg/config.json",
                  fs::copy_options::overwrite_existing);
    const auto r =
        run("-m " + (dir / "cfg").string() + " --data " + data.string() +
                " --data-format raw-u16 -ctx 256 --out " + (dir / "out").string() + " " + flags,
            dir);
    INFO(r.output);
    CHECK(r.exit_code != 0);
    CHECK(r.output.find(message) != std::string::npos);
  }
}

TEST_CASE("training with offload and tiles: the same run as without") {
  const fs::path dir = ll::test::fresh_temp_dir("train_cli_offload");
  const fs::path data = make_data(dir, 256 * 4);
  const auto a = run(base_args(data, dir / "a") + " --steps 2", dir);
  const auto b =
      run(base_args(data, dir / "b") + " --steps 2 --offload-activations on --tile-tokens 96", dir);
  INFO(a.output);
  INFO(b.output);
  REQUIRE(a.exit_code == 0);
  REQUIRE(b.exit_code == 0);
  CHECK(b.output.find("activations    block inputs of 1 of 2 layers in host memory") !=
        std::string::npos);
  CHECK(b.output.find("token tiles of 96") != std::string::npos);
  CHECK(b.output.find("of offloaded activations in host memory") != std::string::npos);
  // Tiles regroup the fp32 sums over tokens of parameter gradients (and OpenBLAS picks its
  // kernels by size): the losses agree to a few ulps, not bit for bit.
  const auto steps_a = ll::MetricsLog::read_steps((dir / "a/metrics.jsonl").string());
  const auto steps_b = ll::MetricsLog::read_steps((dir / "b/metrics.jsonl").string());
  REQUIRE(steps_a.size() == 2);
  REQUIRE(steps_b.size() == 2);
  for (size_t i = 0; i < 2; ++i)
    CHECK(steps_b[i].loss == doctest::Approx(steps_a[i].loss).epsilon(1e-5));
}

TEST_CASE("--attention-kernel: recorded in checkpoints and metrics; a resume may change it") {
  const fs::path dir = ll::test::fresh_temp_dir("train_cli_attention");
  const fs::path data = make_data(dir, 256 * 4);
  const auto a = run(base_args(data, dir / "a") + " --steps 1", dir);
  INFO(a.output);
  REQUIRE(a.exit_code == 0);
  const auto latest = ll::latest_checkpoint((dir / "a").string());
  REQUIRE(latest.has_value());
  CHECK(ll::read_checkpoint(*latest).state.attention_kernel == "auto");  // the CPU's one kernel
  const nlohmann::json options =
      nlohmann::json::parse(ll::read_checkpoint(*latest).state.run_options_json);
  CHECK(options.at("attention-kernel") == "auto");
  // As if a CUDA run with tc-sm80 had written it: resuming on another family is allowed, the
  // setup lines and the metrics log say so.
  const fs::path state = fs::path(*latest) / "trainer_state.json";
  nlohmann::json s = nlohmann::json::parse(read_bytes(state));
  s["attention_kernel"] = "tc-sm80";
  std::ofstream(state) << s.dump(2);
  const auto b = run(base_args(data, dir / "a") + " --steps 2 --resume", dir);
  INFO(b.output);
  REQUIRE(b.exit_code == 0);
  CHECK(b.output.find("the checkpoint was trained with attention kernel tc-sm80, this run uses "
                      "auto") != std::string::npos);
  std::ifstream metrics(dir / "a/metrics.jsonl");
  std::vector<nlohmann::json> events;
  for (std::string line; std::getline(metrics, line);) {
    const nlohmann::json j = nlohmann::json::parse(line);
    if (j.value("event", "") == "attention") events.push_back(j);
  }
  REQUIRE(events.size() == 2);  // the first run's and the resumed one's
  CHECK(events[0].at("kernel") == "auto");
  CHECK_FALSE(events[0].contains("checkpoint_kernel"));
  CHECK(events[1].at("requested") == "auto");
  CHECK(events[1].at("checkpoint_kernel") == "tc-sm80");
}

TEST_CASE("--attention-kernel: impossible choices fail before a run, naming what is possible") {
  const fs::path dir = ll::test::fresh_temp_dir("train_cli_attention_bad");
  fs::create_directories(dir / "cfg");
  fs::copy_file(kModel + "/config.json", dir / "cfg/config.json");
  const std::string model = " -m " + (dir / "cfg").string() + " -ctx 1024 --dry-run";
  // The fixture's head dim has no tensor-core kernels.
  auto r = run("--device cuda --attention-kernel tc-sm80" + model, dir);
  CHECK(r.exit_code != 0);
  CHECK(r.output.find("--attention-kernel tc-sm80: its kernels take head dims 64 and 128") !=
        std::string::npos);
  r = run("--device cpu --attention-kernel simt" + model, dir);
  CHECK(r.exit_code != 0);
  CHECK(r.output.find("the CPU backend (--device cpu) has one attention kernel") !=
        std::string::npos);
  // Head dim 64: the plan counts the atomic-dQ family's accumulator and names the family.
  nlohmann::json cfg = nlohmann::json::parse(read_bytes(dir / "cfg/config.json"));
  cfg["hidden_size"] = 64 * cfg["num_attention_heads"].get<int>();
  cfg["head_dim"] = 64;
  std::ofstream(dir / "cfg/config.json") << cfg.dump(2);
  r = run("--device cuda --attention-kernel tc-sm90-atomic-dq" + model, dir);
  INFO(r.output);
  CHECK(r.exit_code == 0);
  CHECK(r.output.find("attention tc-sm90-atomic-dq") != std::string::npos);
  CHECK(r.output.find("attention dQ accum.") != std::string::npos);
}
