// train_longlora's options: command line (CLI11), YAML config file, validation, JSON record.
#include <doctest/doctest.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "common/error.h"
#include "engine/train/train_options.h"
#include "tests/test_paths.h"

namespace {

// Parses `args` (without the program name) into a fresh TrainOptions, as train_longlora does.
struct Parsed {
  CLI::App app{"test"};
  ll::TrainOptions options;

  explicit Parsed(std::vector<std::string> args, bool apply_config = true) {
    ll::add_train_options(app, options);
    args.insert(args.begin(), "train_longlora");
    std::vector<const char*> argv;
    for (const std::string& a : args) argv.push_back(a.c_str());
    ll::parse_train_args(app, int(argv.size()), argv.data());
    if (apply_config) ll::apply_train_config_file(app, options);
  }
};

std::string write_file(const std::string& dir_name, const std::string& name,
                       const std::string& text) {
  const auto dir = ll::test::fresh_temp_dir(dir_name);
  const std::string path = (dir / name).string();
  std::ofstream(path) << text;
  return path;
}

// The message of the ll::Error that f throws ("" when it throws none).
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const ll::Error& e) {
    return e.what();
  }
  return "";
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

ll::TrainOptions valid_options() {
  ll::TrainOptions o;
  o.model = "model.bin";
  o.data = {"shard.bin"};
  o.ctx = 8192;
  return o;
}

}  // namespace

TEST_CASE("defaults are the paper's recipe and nothing is resumed") {
  Parsed p({});
  const ll::TrainOptions& o = p.options;
  const ll::TrainOptions d;
  CHECK(o.model.empty());
  CHECK(o.data.empty());
  CHECK(o.data_format == "shard");
  CHECK(o.shuffle == "on");
  CHECK(o.ctx == 0);
  CHECK(o.group_ratio == 0.25);
  CHECK_FALSE(o.full_attn);
  CHECK(o.attn_mode == "s2");
  CHECK(o.rope_factor == 0.0);
  CHECK(o.rope_scaling == "auto");
  CHECK(o.lora_rank == 8);
  CHECK(o.lora_alpha == 16.0);
  CHECK(o.lora_targets == "q_proj,k_proj,v_proj,o_proj");
  CHECK(o.trainable == "embed,norm");
  CHECK(o.steps == d.steps);
  CHECK(o.lr == 2e-5);
  CHECK(o.warmup == 20);
  CHECK(o.schedule == "constant");
  CHECK(o.grad_accum == 8);
  CHECK(o.max_grad_norm == 1.0);
  CHECK(o.weight_decay == 0.0);
  CHECK(o.adam_beta1 == 0.9);
  CHECK(o.adam_beta2 == 0.95);
  CHECK(o.adam_eps == 1e-8);
  CHECK(o.seed == 42);
  CHECK(o.device == "auto");
  CHECK(o.attention_kernel == "auto");
  CHECK(o.classifier_chunk == 2048);
  CHECK(o.dist_timeout == 600.0);
  CHECK(o.world_size == 0);
  CHECK(o.out == "out");
  CHECK(o.resume.empty());
  CHECK(o.save_every == 0);
  CHECK(o.keep_checkpoints == 2);
  CHECK(o.log_every == 1);
  CHECK(o.config.empty());
}

TEST_CASE("every flag parses into its field") {
  Parsed p({"-m",
            "llama.bin",
            "--data",
            "a.bin",
            "b.bin",
            "--data-format",
            "raw-u16",
            "--shuffle",
            "off",
            "--ctx",
            "4096",
            "--group-ratio",
            "0.125",
            "--full-attn",
            "--attn-mode",
            "s2-roll",
            "--rope-factor",
            "4",
            "--rope-scaling",
            "yarn",
            "--lora-rank",
            "16",
            "--lora-alpha",
            "32",
            "--lora-targets",
            "q_proj,v_proj",
            "--trainable",
            "none",
            "--init-adapter",
            "adapter/",
            "--steps",
            "77",
            "--lr",
            "1e-4",
            "--warmup",
            "5",
            "--schedule",
            "cosine",
            "--grad-accum",
            "3",
            "--max-grad-norm",
            "0.5",
            "--weight-decay",
            "0.01",
            "--adam-beta1",
            "0.8",
            "--adam-beta2",
            "0.99",
            "--adam-eps",
            "1e-6",
            "--seed",
            "18446744073709551615",
            "--device",
            "cpu",
            "--classifier-chunk",
            "512",
            "--dist-timeout",
            "30",
            "--world-size",
            "8",
            "--out",
            "runs/x",
            "--resume",
            "ckpt/step_10",
            "--save-every",
            "50",
            "--keep-checkpoints",
            "3",
            "--log-every",
            "10"},
           /*apply_config=*/false);
  const ll::TrainOptions& o = p.options;
  CHECK(o.model == "llama.bin");
  CHECK(o.data == std::vector<std::string>{"a.bin", "b.bin"});
  CHECK(o.data_format == "raw-u16");
  CHECK(o.shuffle == "off");
  CHECK(o.ctx == 4096);
  CHECK(o.group_ratio == 0.125);
  CHECK(o.full_attn);
  CHECK(o.attn_mode == "s2-roll");
  CHECK(o.rope_factor == 4.0);
  CHECK(o.rope_scaling == "yarn");
  CHECK(o.lora_rank == 16);
  CHECK(o.lora_alpha == 32.0);
  CHECK(o.lora_targets == "q_proj,v_proj");
  CHECK(o.trainable == "none");
  CHECK(o.init_adapter == "adapter/");
  CHECK(o.steps == 77);
  CHECK(o.lr == 1e-4);
  CHECK(o.warmup == 5);
  CHECK(o.schedule == "cosine");
  CHECK(o.grad_accum == 3);
  CHECK(o.max_grad_norm == 0.5);
  CHECK(o.weight_decay == 0.01);
  CHECK(o.adam_beta1 == 0.8);
  CHECK(o.adam_beta2 == 0.99);
  CHECK(o.adam_eps == 1e-6);
  CHECK(o.seed == 18446744073709551615ull);
  CHECK(o.device == "cpu");
  CHECK(o.classifier_chunk == 512);
  CHECK(o.dist_timeout == 30.0);
  CHECK(o.world_size == 8);
  CHECK(o.out == "runs/x");
  CHECK(o.resume == "ckpt/step_10");
  CHECK(o.save_every == 50);
  CHECK(o.keep_checkpoints == 3);
  CHECK(o.log_every == 10);
  CHECK_NOTHROW(ll::validate_train_options(o));

  Parsed c({"--config", "run.yaml", "--model", "m"}, /*apply_config=*/false);
  CHECK(c.options.config == "run.yaml");
  CHECK(c.options.model == "m");
}

TEST_CASE("--data takes one or more values, also repeated") {
  CHECK(Parsed({"--data", "x.bin"}).options.data == std::vector<std::string>{"x.bin"});
  CHECK(Parsed({"--data", "a", "b", "c", "--steps", "2"}).options.data ==
        std::vector<std::string>{"a", "b", "c"});
  CHECK(Parsed({"--data", "a", "--steps", "2", "--data", "b"}).options.data ==
        std::vector<std::string>{"a", "b"});
  CHECK_THROWS_AS(Parsed({"--data"}), CLI::ParseError);
}

TEST_CASE("-ctx and --ctx both work, in every spelling") {
  CHECK(Parsed({"-ctx", "8192"}).options.ctx == 8192);
  CHECK(Parsed({"--ctx", "8192"}).options.ctx == 8192);
  CHECK(Parsed({"-ctx=100000"}).options.ctx == 100000);
  CHECK(Parsed({"--ctx=100000"}).options.ctx == 100000);
  // The README's command line.
  Parsed p({"-m", "llama2-7b.bin", "-ctx", "100000", "--data", "redpajama/"});
  CHECK(p.options.model == "llama2-7b.bin");
  CHECK(p.options.ctx == 100000);
  CHECK(p.options.data == std::vector<std::string>{"redpajama/"});
  // Other long names take one dash too; short flags and values are left alone.
  CHECK(Parsed({"-lora-rank", "4"}).options.lora_rank == 4);
  CHECK(Parsed({"-mfoo.bin"}).options.model == "foo.bin");
  CHECK(Parsed({"--lr", "-1"}).options.lr == -1.0);  // parses; validation rejects it

  const char* argv[] = {"prog", "-ctx", "5", "-m", "x", "-steps=3", "-x", "--", "-ctx"};
  const std::vector<std::string> args = ll::normalize_train_args(9, argv);
  CHECK(args == std::vector<std::string>{"--ctx", "5", "-m", "x", "--steps=3", "-x", "--", "-ctx"});
  CHECK(ll::normalize_train_args(1, argv).empty());
}

TEST_CASE("--resume: absent, alone (auto), with a directory") {
  CHECK(Parsed({}).options.resume.empty());
  CHECK(Parsed({"--resume"}).options.resume == "auto");
  CHECK(Parsed({"--resume", "--steps", "5"}).options.resume == "auto");
  CHECK(Parsed({"--resume", "--steps", "5"}).options.steps == 5);
  CHECK(Parsed({"--steps", "5", "--resume"}).options.resume == "auto");
  CHECK(Parsed({"--resume", "out/ckpt_000100"}).options.resume == "out/ckpt_000100");
  CHECK(Parsed({"--resume=out/ckpt_000100"}).options.resume == "out/ckpt_000100");
  CHECK(Parsed({"--resume", "auto"}).options.resume == "auto");
}

TEST_CASE("bad command lines are CLI11 parse errors") {
  CHECK_THROWS_AS(Parsed({"--steps", "abc"}), CLI::ParseError);
  CHECK_THROWS_AS(Parsed({"--no-such-flag"}), CLI::ParseError);
  CHECK_THROWS_AS(Parsed({"--shuffle", "maybe"}), CLI::ParseError);
  CHECK_THROWS_AS(Parsed({"--help"}), CLI::CallForHelp);
}

TEST_CASE("help lists every option with its default") {
  CLI::App app{"train"};
  ll::TrainOptions o;
  ll::add_train_options(app, o);
  const std::string help = app.help();
  for (const char* flag : {"-m,--model",
                           "--data",
                           "--data-format",
                           "--shuffle",
                           "--ctx",
                           "--group-ratio",
                           "--full-attn",
                           "--attn-mode",
                           "--rope-factor",
                           "--rope-scaling",
                           "--lora-rank",
                           "--lora-alpha",
                           "--lora-targets",
                           "--trainable",
                           "--init-adapter",
                           "--steps",
                           "--lr",
                           "--warmup",
                           "--schedule",
                           "--grad-accum",
                           "--max-grad-norm",
                           "--weight-decay",
                           "--adam-beta1",
                           "--adam-beta2",
                           "--adam-eps",
                           "--seed",
                           "--device",
                           "--classifier-chunk",
                           "--dist-timeout",
                           "--world-size",
                           "--out",
                           "--resume",
                           "--save-every",
                           "--keep-checkpoints",
                           "--log-every",
                           "--config"})
    CHECK_MESSAGE(contains(help, flag), flag);
  CHECK(contains(help, "2048"));                         // --classifier-chunk
  CHECK(contains(help, "q_proj,k_proj,v_proj,o_proj"));  // --lora-targets
  CHECK(contains(help, "0.95"));                         // --adam-beta2
  CHECK(contains(help, "auto"));                         // --resume / --device
}

TEST_CASE("a YAML config file sets every key it names") {
  const std::string path = write_file("opts_yaml", "run.yaml",
                                      "# a run\n"
                                      "model: llama.bin\n"
                                      "data: [a.bin, b.bin]\n"
                                      "ctx: 8192\n"
                                      "lora-rank: 16\n"
                                      "lora-alpha: 32.5\n"
                                      "lr: 2e-4\n"
                                      "full-attn: true\n"
                                      "shuffle: off\n"
                                      "seed: 7\n"
                                      "keep-checkpoints: 5\n"
                                      "resume:\n");
  Parsed p({"--config", path});
  const ll::TrainOptions& o = p.options;
  CHECK(o.model == "llama.bin");
  CHECK(o.data == std::vector<std::string>{"a.bin", "b.bin"});
  CHECK(o.ctx == 8192);
  CHECK(o.lora_rank == 16);
  CHECK(o.lora_alpha == 32.5);
  CHECK(o.lr == 2e-4);
  CHECK(o.full_attn);
  CHECK(o.shuffle == "off");  // YAML 1.1's "off" stays the word here
  CHECK(o.seed == 7);
  CHECK(o.keep_checkpoints == 5);
  CHECK(o.resume == "auto");  // "resume:" alone, like "--resume" alone
  CHECK(o.steps == 1000);     // untouched keys keep their defaults
  CHECK_NOTHROW(ll::validate_train_options(o));

  // data as a single string; a block list; an empty file sets nothing.
  CHECK(Parsed({"--config", write_file("opts_yaml1", "a.yaml", "data: only.bin\n")}).options.data ==
        std::vector<std::string>{"only.bin"});
  CHECK(Parsed({"--config", write_file("opts_yaml2", "b.yaml", "data:\n  - x\n  - y\n")})
            .options.data == std::vector<std::string>{"x", "y"});
  CHECK(Parsed({"--config", write_file("opts_yaml3", "c.yaml", "")}).options.steps == 1000);
}

TEST_CASE("flags given on the command line beat the config file") {
  const std::string path = write_file("opts_precedence", "run.yaml",
                                      "model: from_yaml.bin\n"
                                      "data: [yaml.bin]\n"
                                      "ctx: 8192\n"
                                      "steps: 10\n"
                                      "lr: 1e-3\n");
  Parsed p({"--config", path, "-ctx", "2048", "--data", "cli.bin", "--lr", "5e-5"});
  CHECK(p.options.model == "from_yaml.bin");
  CHECK(p.options.steps == 10);
  CHECK(p.options.ctx == 2048);
  CHECK(p.options.data == std::vector<std::string>{"cli.bin"});
  CHECK(p.options.lr == 5e-5);
  // A flag that repeats the default still counts as given.
  CHECK(Parsed({"--config", path, "--steps", "1000"}).options.steps == 1000);
}

TEST_CASE("config file errors name the file, the key and the line") {
  SUBCASE("unknown key") {
    const std::string path = write_file("opts_unknown", "run.yaml", "ctx: 4\nlora-rnak: 16\n");
    const std::string msg = error_of([&] { Parsed({"--config", path}); });
    CHECK(contains(msg, path));
    CHECK(contains(msg, "lora-rnak"));
    CHECK(contains(msg, ":2:"));
    CHECK(contains(msg, "unknown key"));
  }
  SUBCASE("underscore spelling gets a hint") {
    const std::string path = write_file("opts_underscore", "run.yaml", "lora_rank: 16\n");
    const std::string msg = error_of([&] { Parsed({"--config", path}); });
    CHECK(contains(msg, "lora_rank"));
    CHECK(contains(msg, "did you mean \"lora-rank\""));
  }
  SUBCASE("wrong types") {
    struct Case {
      const char* text;
      const char* key;
      const char* line;
    };
    for (const Case& c :
         {Case{"steps: abc\n", "steps", ":1:"}, Case{"model: m\nsteps: 3.5\n", "steps", ":2:"},
          Case{"lr: fast\n", "lr", ":1:"}, Case{"full-attn: maybe\n", "full-attn", ":1:"},
          Case{"seed: -1\n", "seed", ":1:"},
          Case{"keep-checkpoints: 99999999999\n", "keep-checkpoints", ":1:"},
          Case{"model: [a, b]\n", "model", ":1:"}, Case{"ctx: {a: 1}\n", "ctx", ":1:"},
          Case{"data: [[a]]\n", "data", ":1:"}, Case{"steps:\n", "steps", ":1:"}}) {
      const std::string path = write_file("opts_type", "run.yaml", c.text);
      const std::string msg = error_of([&] { Parsed({"--config", path}); });
      CHECK_MESSAGE(contains(msg, path), msg);
      CHECK_MESSAGE(contains(msg, std::string("\"") + c.key + "\""), msg);
      CHECK_MESSAGE(contains(msg, c.line), msg);
    }
  }
  SUBCASE("a wrong type is an error even where a flag overrides the key") {
    const std::string path = write_file("opts_type_override", "run.yaml", "steps: abc\n");
    CHECK(contains(error_of([&] { Parsed({"--config", path, "--steps", "3"}); }), "steps"));
  }
  SUBCASE("malformed YAML") {
    const std::string path = write_file("opts_malformed", "run.yaml", "ctx: 4\nsteps: [1, 2\n");
    const std::string msg = error_of([&] { Parsed({"--config", path}); });
    CHECK(contains(msg, path));
    CHECK(contains(msg, "malformed YAML"));
  }
  SUBCASE("not a mapping") {
    const std::string path = write_file("opts_list", "run.yaml", "- ctx\n- 4\n");
    CHECK(contains(error_of([&] { Parsed({"--config", path}); }), path));
  }
  SUBCASE("\"config\" inside the file") {
    const std::string path = write_file("opts_config_key", "run.yaml", "config: other.yaml\n");
    const std::string msg = error_of([&] { Parsed({"--config", path}); });
    CHECK(contains(msg, path));
    CHECK(contains(msg, "\"config\""));
  }
  SUBCASE("a key given twice") {
    const std::string path = write_file("opts_twice", "run.yaml", "steps: 1\nsteps: 2\n");
    const std::string msg = error_of([&] { Parsed({"--config", path}); });
    CHECK(contains(msg, "steps"));
    CHECK(contains(msg, "twice"));
  }
  SUBCASE("missing file") {
    const auto dir = ll::test::fresh_temp_dir("opts_missing");
    const std::string path = (dir / "nope.yaml").string();
    const std::string msg = error_of([&] { Parsed({"--config", path}); });
    CHECK(contains(msg, path));
    CHECK(contains(error_of([&] { Parsed({"--config", dir.string()}); }), "directory"));
  }
}

TEST_CASE("--attention-kernel: every family by flag and YAML key; a CUDA family needs CUDA") {
  for (const char* name : {"auto", "simt", "tc-sm80", "tc-sm90", "tc-sm90-atomic-dq"}) {
    CAPTURE(name);
    CHECK(Parsed({"--attention-kernel", name}).options.attention_kernel == name);
    const std::string path =
        write_file("opts_attention", "run.yaml", std::string("attention-kernel: ") + name + "\n");
    CHECK(Parsed({"--config", path}).options.attention_kernel == name);
  }
  CHECK_THROWS_AS(Parsed({"--attention-kernel", "tc"}), CLI::ParseError);
  CHECK(Parsed({"--attention-kernel", "tc-sm80", "--config",
                write_file("opts_attention_win", "run.yaml", "attention-kernel: simt\n")})
            .options.attention_kernel == "tc-sm80");  // the flag beats the file

  ll::TrainOptions o = valid_options();
  o.attention_kernel = "flash";
  CHECK_THROWS_WITH_AS(ll::validate_train_options(o),
                       doctest::Contains("--attention-kernel must be one of auto, simt, tc-sm80, "
                                         "tc-sm90, tc-sm90-atomic-dq"),
                       ll::Error);
  // The CPU backend has one attention kernel; auto and cuda devices take any family.
  o.device = "cpu";
  o.attention_kernel = "tc-sm80";
  CHECK_THROWS_WITH_AS(ll::validate_train_options(o),
                       doctest::Contains("the CPU backend (--device cpu) has one attention kernel"),
                       ll::Error);
  o.attention_kernel = "auto";
  CHECK_NOTHROW(ll::validate_train_options(o));
  o.device = "cuda";
  o.attention_kernel = "tc-sm90-atomic-dq";
  CHECK_NOTHROW(ll::validate_train_options(o));
  CHECK(nlohmann::json::parse(ll::train_options_json(o))["attention-kernel"] ==
        "tc-sm90-atomic-dq");
}

TEST_CASE("validation names the option and the accepted values") {
  CHECK_NOTHROW(ll::validate_train_options(valid_options()));
  struct Case {
    std::function<void(ll::TrainOptions&)> change;
    const char* expect;
  };
  const std::vector<Case> cases = {
      {[](auto& o) { o.model.clear(); }, "--model"},
      {[](auto& o) { o.data.clear(); }, "--data"},
      {[](auto& o) { o.ctx = 0; }, "--ctx"},
      {[](auto& o) { o.ctx = 1; }, "--ctx"},
      {[](auto& o) { o.steps = 0; }, "--steps"},
      {[](auto& o) { o.lr = 0; }, "--lr"},
      {[](auto& o) { o.lr = -1e-5; }, "--lr"},
      {[](auto& o) { o.lr = std::nan(""); }, "--lr"},
      {[](auto& o) { o.warmup = -1; }, "--warmup"},
      {[](auto& o) { o.grad_accum = 0; }, "--grad-accum"},
      {[](auto& o) { o.dist_timeout = 0; }, "--dist-timeout"},
      {[](auto& o) { o.dist_timeout = std::nan(""); }, "--dist-timeout"},
      {[](auto& o) { o.world_size = -1; }, "--world-size"},
      {[](auto& o) { o.group_ratio = 0; }, "--group-ratio"},
      {[](auto& o) { o.group_ratio = 1.5; }, "--group-ratio"},
      {[](auto& o) {
         o.ctx = 4;
         o.group_ratio = 0.25;
       },
       "--group-ratio"},
      {[](auto& o) { o.lora_rank = 0; }, "--lora-rank"},
      {[](auto& o) { o.lora_alpha = 0; }, "--lora-alpha"},
      {[](auto& o) { o.lora_targets = "q_proj,x_proj"; }, "--lora-targets"},
      {[](auto& o) { o.lora_targets = "q_proj,q_proj"; }, "--lora-targets"},
      {[](auto& o) { o.trainable = "embed,lm_head"; }, "--trainable"},
      {[](auto& o) { o.max_grad_norm = -1; }, "--max-grad-norm"},
      {[](auto& o) { o.weight_decay = -0.1; }, "--weight-decay"},
      {[](auto& o) { o.adam_beta1 = 1.0; }, "--adam-beta1"},
      {[](auto& o) { o.adam_beta2 = -0.1; }, "--adam-beta2"},
      {[](auto& o) { o.adam_eps = 0; }, "--adam-eps"},
      {[](auto& o) { o.rope_factor = -1; }, "--rope-factor"},
      {[](auto& o) { o.rope_factor = 0.5; }, "--rope-factor"},
      {[](auto& o) { o.classifier_chunk = 0; }, "--classifier-chunk"},
      {[](auto& o) { o.keep_checkpoints = 0; }, "--keep-checkpoints"},
      {[](auto& o) { o.save_every = -1; }, "--save-every"},
      {[](auto& o) { o.log_every = 0; }, "--log-every"},
  };
  for (const Case& c : cases) {
    ll::TrainOptions o = valid_options();
    c.change(o);
    const std::string msg = error_of([&] { ll::validate_train_options(o); });
    CHECK_MESSAGE(contains(msg, c.expect), c.expect, " -> ", msg);
  }

  struct EnumCase {
    std::function<void(ll::TrainOptions&)> change;
    const char* option;
    std::vector<const char*> accepted;
  };
  const std::vector<EnumCase> enums = {
      {[](auto& o) { o.data_format = "u32"; }, "--data-format", {"shard", "raw-u16"}},
      {[](auto& o) { o.shuffle = "yes"; }, "--shuffle", {"on", "off"}},
      {[](auto& o) { o.attn_mode = "dense"; }, "--attn-mode", {"s2", "s2-roll"}},
      {[](auto& o) { o.schedule = "linear"; }, "--schedule", {"constant", "cosine"}},
      {[](auto& o) { o.device = "gpu"; }, "--device", {"auto", "cpu", "cuda"}},
      {[](auto& o) { o.rope_scaling = "dynamic"; },
       "--rope-scaling",
       {"auto", "linear", "yarn", "llama3"}},
  };
  for (const EnumCase& c : enums) {
    ll::TrainOptions o = valid_options();
    c.change(o);
    const std::string msg = error_of([&] { ll::validate_train_options(o); });
    CHECK_MESSAGE(contains(msg, c.option), msg);
    for (const char* word : c.accepted) CHECK_MESSAGE(contains(msg, word), msg);
  }

  // Edges that are allowed.
  ll::TrainOptions o = valid_options();
  o.ctx = 2;
  o.full_attn = true;
  o.group_ratio = 1.0;
  o.warmup = 0;
  o.max_grad_norm = 0;
  o.adam_beta1 = 0;
  o.save_every = 0;
  o.lora_targets = "all-linear";
  o.trainable = "all";
  CHECK_NOTHROW(ll::validate_train_options(o));
  o.trainable = "norm";
  CHECK_NOTHROW(ll::validate_train_options(o));
  o.trainable = "embed,norm,bias";  // Qwen2's q/k/v biases too
  CHECK_NOTHROW(ll::validate_train_options(o));
}

TEST_CASE("the JSON record parses and holds the resolved values") {
  ll::TrainOptions o = valid_options();
  o.data = {"a.bin", "b.bin"};
  o.lora_rank = 16;
  o.lr = 3e-5;
  o.full_attn = true;
  o.seed = 18446744073709551615ull;
  o.resume = "auto";
  const nlohmann::json j = nlohmann::json::parse(ll::train_options_json(o));
  REQUIRE(j.is_object());
  CHECK(j.size() == 46);  // one key per TrainOptions field
  CHECK(j["attention-kernel"] == "auto");
  CHECK(j["sharded-optimizer"] == false);
  CHECK(j["dist-timeout"].get<double>() == 600.0);
  CHECK(j["world-size"] == 0);
  CHECK(j["model"] == "model.bin");
  CHECK(j["data"] == nlohmann::json::array({"a.bin", "b.bin"}));
  CHECK(j["ctx"] == 8192);
  CHECK(j["lora-rank"] == 16);
  CHECK(j["lr"].get<double>() == 3e-5);
  CHECK(j["full-attn"] == true);
  CHECK(j["seed"].get<uint64_t>() == 18446744073709551615ull);
  CHECK(j["resume"] == "auto");
  CHECK(j["group-ratio"].get<double>() == 0.25);
  CHECK(j["attn-mode"] == "s2");
  CHECK(j["keep-checkpoints"] == 2);

  // The record uses the config file's keys: written back as YAML (JSON is YAML), it restores
  // the same options.
  nlohmann::json no_config = j;
  no_config.erase("config");
  const std::string path = write_file("opts_roundtrip", "run.yaml", no_config.dump());
  Parsed p({"--config", path});
  p.options.config.clear();
  CHECK(ll::train_options_json(p.options) == ll::train_options_json(o));
}
