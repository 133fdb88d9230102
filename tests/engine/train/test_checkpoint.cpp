// Training checkpoints: bit-exact round trips, trainer_state.json, keep-last pruning, which
// directory latest_checkpoint picks, the errors of read_checkpoint on damaged checkpoints, and
// durability: writers killed with SIGKILL at random moments never cost the previous checkpoint;
// sharded checkpoints of data-parallel runs (ranks as threads here): every shard, the manifest
// that commits them, and the errors of damaged or uncommitted ones.
#include <doctest/doctest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <barrier>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <random>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "engine/parallel/shard_layout.h"
#include "engine/train/checkpoint.h"
#include "model/formats/safetensors.h"
#include "tests/model/model_fixtures.h"

using ll::Checkpoint;
using ll::HostTensor;
using ll::test::TempDir;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kRunOptions =
    R"({"model":"tiny","lr":2e-05,"ctx":8192,"lora-targets":"q_proj,v_proj","data":["a","b"]})";

// Values from (seed, tensor, index) alone, cheap enough for tens of MB: uniform in [-1, 1).
float value_at(uint64_t seed, uint64_t tensor, uint64_t i) {
  uint64_t z = seed * 0x9e3779b97f4a7c15ull + tensor * 0xbf58476d1ce4e5b9ull + i + 1;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return float(int64_t(z >> 40) - (int64_t(1) << 23)) / float(1 << 23);
}

HostTensor tensor(std::vector<int64_t> shape, uint64_t seed, uint64_t id, bool non_negative) {
  HostTensor t{std::move(shape), {}};
  int64_t n = 1;
  for (int64_t d : t.shape) n *= d;
  t.values.resize(size_t(n));
  for (int64_t i = 0; i < n; ++i) {
    const float v = value_at(seed, id, uint64_t(i));
    t.values[size_t(i)] = non_negative ? v * v : v;
  }
  return t;
}

// A checkpoint of a two-layer adapter (q/v, r 4) plus embeddings and norms. `embed_rows` sets
// the size: 65536 rows of 64 make 16 MB of parameters and 32 MB of moments.
Checkpoint make_checkpoint(int64_t step, uint64_t seed, int64_t embed_rows = 32,
                           int64_t hidden = 16) {
  Checkpoint c;
  c.adapter.lora.rank = 4;
  c.adapter.lora.alpha = 8;
  c.adapter.lora.targets = {"q_proj", "v_proj"};
  c.adapter.base_model = "tests/fixtures/tiny_llama";
  uint64_t id = 0;
  for (int64_t l = 0; l < 2; ++l) {
    c.adapter.lora_tensors[ll::peft_lora_key(l, "q_proj", 'A')] =
        tensor({4, hidden}, seed, id++, false);
    c.adapter.lora_tensors[ll::peft_lora_key(l, "q_proj", 'B')] =
        tensor({hidden, 4}, seed, id++, false);
    c.adapter.lora_tensors[ll::peft_lora_key(l, "v_proj", 'A')] =
        tensor({4, hidden}, seed, id++, false);
    c.adapter.lora_tensors[ll::peft_lora_key(l, "v_proj", 'B')] = tensor({8, 4}, seed, id++, false);
    c.adapter.trainable_params[fmt::format("model.layers.{}.input_layernorm.weight", l)] =
        tensor({hidden}, seed, id++, false);
  }
  c.adapter.trainable_params["model.embed_tokens.weight"] =
      tensor({embed_rows, hidden}, seed, id++, false);
  c.adapter.trainable_params["model.norm.weight"] = tensor({hidden}, seed, id++, false);
  auto add_moments = [&](const std::map<std::string, HostTensor>& params) {
    for (const auto& [name, p] : params) {
      c.moments.exp_avg[name] = tensor(p.shape, seed, id++, false);
      c.moments.exp_avg_sq[name] = tensor(p.shape, seed, id++, true);
    }
  };
  add_moments(c.adapter.lora_tensors);
  add_moments(c.adapter.trainable_params);
  c.state.step = step;
  c.state.loader = {int64_t(seed % 3), int64_t(seed * 7 % 1000)};
  c.state.seed = std::numeric_limits<uint64_t>::max() - seed;  // above 2^63: not a JSON double
  c.state.tokens_seen = step * 8192;
  c.state.model_fingerprint = fmt::format("fingerprint-{}", seed);
  c.state.run_options_json = kRunOptions;
  c.state.attention_kernel = "tc-sm80";
  return c;
}

bool same_bits(const std::map<std::string, HostTensor>& a,
               const std::map<std::string, HostTensor>& b) {
  if (a.size() != b.size()) return false;
  for (const auto& [name, t] : a) {
    auto it = b.find(name);
    if (it == b.end() || it->second.shape != t.shape ||
        it->second.values.size() != t.values.size() ||
        std::memcmp(it->second.values.data(), t.values.data(), t.values.size() * 4) != 0) {
      return false;
    }
  }
  return true;
}

bool same_checkpoint(const Checkpoint& a, const Checkpoint& b) {
  return a.adapter.lora.rank == b.adapter.lora.rank &&
         a.adapter.lora.alpha == b.adapter.lora.alpha &&
         a.adapter.lora.targets == b.adapter.lora.targets &&
         a.adapter.base_model == b.adapter.base_model &&
         same_bits(a.adapter.lora_tensors, b.adapter.lora_tensors) &&
         same_bits(a.adapter.trainable_params, b.adapter.trainable_params) &&
         same_bits(a.moments.exp_avg, b.moments.exp_avg) &&
         same_bits(a.moments.exp_avg_sq, b.moments.exp_avg_sq) && a.state.step == b.state.step &&
         a.state.loader == b.state.loader && a.state.seed == b.state.seed &&
         a.state.tokens_seen == b.state.tokens_seen &&
         a.state.model_fingerprint == b.state.model_fingerprint &&
         a.state.run_options_json == b.state.run_options_json &&
         a.state.attention_kernel == b.state.attention_kernel;
}

std::set<std::string> entries(const fs::path& dir) {
  std::set<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.insert(e.path().filename().string());
  return names;
}

// A pid that belonged to a process that has exited (and was reaped).
pid_t dead_pid() {
  const pid_t pid = ::fork();
  if (pid == 0) ::_exit(0);
  int status = 0;
  ::waitpid(pid, &status, 0);
  return pid;
}

// read_checkpoint(dir) throws an ll::Error naming `file` (a path) and containing `fragment`.
void check_read_error(const fs::path& dir, const fs::path& file, const std::string& fragment) {
  CAPTURE(fragment);
  std::string message;
  try {
    ll::read_checkpoint(dir.string());
  } catch (const ll::Error& e) {
    message = e.what();
  }
  CAPTURE(message);
  REQUIRE_FALSE(message.empty());
  CHECK(message.find(file.string()) != std::string::npos);
  CHECK(message.find(fragment) != std::string::npos);
}

void write_moments(const fs::path& path, const std::map<std::string, HostTensor>& tensors,
                   ll::DType dtype = ll::DType::F32) {
  std::vector<std::vector<uint16_t>> halves;
  std::vector<ll::SafetensorsTensor> views;
  halves.reserve(tensors.size());
  for (const auto& [name, t] : tensors) {
    if (dtype == ll::DType::F32) {
      views.push_back({name, dtype, t.shape, t.values.data()});
    } else {
      halves.emplace_back();
      for (float v : t.values) halves.back().push_back(ll::f32_to_bf16(v));
      views.push_back({name, dtype, t.shape, halves.back().data()});
    }
  }
  ll::write_safetensors(path.string(), views);
}

std::map<std::string, HostTensor> moment_file(const Checkpoint& c) {
  std::map<std::string, HostTensor> out;
  for (const auto& [name, t] : c.moments.exp_avg) out["exp_avg." + name] = t;
  for (const auto& [name, t] : c.moments.exp_avg_sq) out["exp_avg_sq." + name] = t;
  return out;
}

}  // namespace

TEST_CASE("write then read a checkpoint gives identical bits and state") {
  TempDir tmp("ckpt_roundtrip");
  const std::string out = tmp.file("out");  // created by write_checkpoint
  const Checkpoint c = make_checkpoint(12, 5);
  const std::string path = ll::write_checkpoint(out, c, 2);
  CHECK(path == (fs::path(out) / "checkpoint-00000012").string());
  CHECK(entries(out) == std::set<std::string>{"checkpoint-00000012"});
  CHECK(entries(path) == std::set<std::string>{"adapter_config.json", "adapter_model.safetensors",
                                               "trainable_params.safetensors",
                                               "optimizer_state.safetensors",
                                               "trainer_state.json"});
  const Checkpoint r = ll::read_checkpoint(path);
  CHECK(same_checkpoint(c, r));
  CHECK(r.state.run_options_json == kRunOptions);  // key order and number text kept
  CHECK(ll::read_checkpoint(path + "/").state.step == 12);

  const json state = json::parse(ll::test::read_bytes(fs::path(path) / "trainer_state.json"));
  CHECK(state.at("format") == "ll-train-state");
  CHECK(state.at("version") == 1);
  CHECK(state.at("step") == 12);
  CHECK(state.at("loader") == json({{"epoch", 2}, {"index", 35}}));
  CHECK(state.at("seed") == std::to_string(std::numeric_limits<uint64_t>::max() - 5));
  CHECK(state.at("tokens_seen") == 12 * 8192);
  CHECK(state.at("model_fingerprint") == "fingerprint-5");
  CHECK(state.at("attention_kernel") == "tc-sm80");  // the family it trained with
  CHECK(state.at("run_options").is_object());        // embedded, not a string
  CHECK(state.at("run_options").at("ctx") == 8192);

  const ll::SafetensorsFile moments =
      ll::read_safetensors((fs::path(path) / "optimizer_state.safetensors").string());
  CHECK(moments.tensors.size() == 2 * (8 + 4));
  CHECK(moments.find("exp_avg.model.embed_tokens.weight") != nullptr);
  CHECK(moments.find("exp_avg_sq." + ll::peft_lora_key(1, "v_proj", 'B')) != nullptr);

  SUBCASE("run options that are not JSON stay a string; none at all reads back empty") {
    for (const std::string options : {"--lr 2e-5 --ctx 8192", "", "42", "\"quoted\""}) {
      Checkpoint d = make_checkpoint(13, 6);
      d.state.run_options_json = options;
      const std::string p = ll::write_checkpoint(out, d, 0);
      CHECK(ll::read_checkpoint(p).state.run_options_json == options);
      const json s = json::parse(ll::test::read_bytes(fs::path(p) / "trainer_state.json"));
      CHECK(s.at("run_options") == options);
    }
  }
  SUBCASE("a checkpoint from before the attention kernel was recorded reads back without one") {
    Checkpoint d = make_checkpoint(15, 8);
    d.state.attention_kernel.clear();
    const std::string p = ll::write_checkpoint(out, d, 0);
    const json s = json::parse(ll::test::read_bytes(fs::path(p) / "trainer_state.json"));
    CHECK_FALSE(s.contains("attention_kernel"));
    CHECK(ll::read_checkpoint(p).state.attention_kernel.empty());
  }
  SUBCASE("seed 0 and a step beyond 8 digits") {
    Checkpoint d = make_checkpoint(123456789, 6);
    d.state.seed = 0;
    const std::string p = ll::write_checkpoint(out, d, 0);
    CHECK(fs::path(p).filename() == "checkpoint-123456789");
    CHECK(same_checkpoint(ll::read_checkpoint(p), d));
    CHECK(ll::latest_checkpoint(out) == p);
  }
  SUBCASE("no trainable base parameters") {
    Checkpoint d = make_checkpoint(14, 7);
    for (const auto& [name, t] : d.adapter.trainable_params) {
      d.moments.exp_avg.erase(name);
      d.moments.exp_avg_sq.erase(name);
    }
    d.adapter.trainable_params.clear();
    const std::string p = ll::write_checkpoint(out, d, 0);
    CHECK_FALSE(fs::exists(fs::path(p) / "trainable_params.safetensors"));
    CHECK(same_checkpoint(ll::read_checkpoint(p), d));
  }
}

TEST_CASE("keep_last prunes the oldest checkpoints and latest_checkpoint picks the highest step") {
  TempDir tmp("ckpt_prune");
  const fs::path out = tmp.path / "out";
  CHECK_FALSE(ll::latest_checkpoint(out.string()).has_value());  // no directory yet
  fs::create_directories(out);
  CHECK_FALSE(ll::latest_checkpoint(out.string()).has_value());  // empty

  // Things pruning must never touch.
  fs::create_directories(out / "logs");
  fs::create_directories(out / "checkpoint-best");
  ll::test::write_text(out / "metrics.jsonl", "{}\n");

  const Checkpoint c1 = make_checkpoint(100, 1), c2 = make_checkpoint(200, 2),
                   c3 = make_checkpoint(300, 3);
  ll::write_checkpoint(out.string(), c1, 2);
  ll::write_checkpoint(out.string(), c2, 2);
  CHECK(ll::latest_checkpoint(out.string()) == (out / "checkpoint-00000200").string());
  ll::write_checkpoint(out.string(), c3, 2);
  CHECK(entries(out) == std::set<std::string>{"checkpoint-00000200", "checkpoint-00000300",
                                              "checkpoint-best", "logs", "metrics.jsonl"});
  const auto latest = ll::latest_checkpoint(out.string());
  REQUIRE(latest.has_value());
  CHECK(*latest == (out / "checkpoint-00000300").string());
  CHECK(same_checkpoint(ll::read_checkpoint(*latest), c3));
  CHECK(same_checkpoint(ll::read_checkpoint((out / "checkpoint-00000200").string()), c2));

  SUBCASE("keep_last <= 0 keeps every checkpoint") {
    ll::write_checkpoint(out.string(), make_checkpoint(400, 4), 0);
    ll::write_checkpoint(out.string(), make_checkpoint(500, 5), -1);
    for (const char* name : {"checkpoint-00000200", "checkpoint-00000300", "checkpoint-00000400",
                             "checkpoint-00000500"}) {
      CHECK(fs::exists(out / name));
    }
  }
  SUBCASE("the checkpoint just written is never pruned, even when it has the lowest step") {
    ll::write_checkpoint(out.string(), make_checkpoint(50, 9), 1);
    CHECK(entries(out) ==
          std::set<std::string>{"checkpoint-00000050", "checkpoint-best", "logs", "metrics.jsonl"});
    ll::write_checkpoint(out.string(), make_checkpoint(60, 9), 2);
    ll::write_checkpoint(out.string(), make_checkpoint(40, 9), 2);
    CHECK(fs::exists(out / "checkpoint-00000040"));
    CHECK(fs::exists(out / "checkpoint-00000060"));
    CHECK_FALSE(fs::exists(out / "checkpoint-00000050"));
  }
  SUBCASE("pruning counts a checkpoint-<digits> directory made by hand") {
    fs::create_directories(out / "checkpoint-7");
    ll::write_checkpoint(out.string(), make_checkpoint(400, 4), 2);
    CHECK_FALSE(fs::exists(out / "checkpoint-7"));
    CHECK_FALSE(fs::exists(out / "checkpoint-00000200"));
    CHECK(fs::exists(out / "checkpoint-00000300"));
  }
}

TEST_CASE("latest_checkpoint ignores debris, look-alike names and incomplete directories") {
  TempDir tmp("ckpt_latest");
  const fs::path out = tmp.path;
  const std::string good = ll::write_checkpoint(out.string(), make_checkpoint(20, 1), 0);
  // A killed writer's directories, even ones that look finished inside.
  const pid_t dead = dead_pid();
  fs::copy(good, out / fmt::format(".checkpoint-900.tmp-{}", dead), fs::copy_options::recursive);
  fs::copy(good, out / fmt::format(".checkpoint-901.old-{}", dead), fs::copy_options::recursive);
  // Names that are not checkpoint-<digits> exactly.
  for (const char* name :
       {"checkpoint-", "checkpoint-9x", "checkpoint-00000950.bak", "xcheckpoint-960",
        "Checkpoint-970", "checkpoint--980", "checkpoint-+990", "checkpoint-1e9"}) {
    fs::copy(good, out / name, fs::copy_options::recursive);
  }
  // A directory without trainer_state.json, a file under a checkpoint name.
  fs::create_directories(out / "checkpoint-00000999");
  ll::test::write_text(out / "checkpoint-00000999" / "adapter_config.json", "{}");
  ll::test::write_text(out / "checkpoint-00000998", "not a directory");
  // trainer_state.json that is a directory.
  fs::create_directories(out / "checkpoint-00000997" / "trainer_state.json");
  CHECK(ll::latest_checkpoint(out.string()) == good);
  // (The next write_checkpoint would put the .old one back as checkpoint-00000901: a writer
  // killed between moving it aside and moving its replacement in. Not the subject here.)
  fs::remove_all(out / fmt::format(".checkpoint-901.old-{}", dead));

  // Steps compare as numbers, not as names.
  const std::string nine = ll::write_checkpoint(out.string(), make_checkpoint(9, 2), 0);
  CHECK(ll::latest_checkpoint(out.string()) == good);
  fs::copy(nine, out / "checkpoint-100", fs::copy_options::recursive);  // unpadded, step 100
  CHECK(ll::latest_checkpoint(out.string()) == (out / "checkpoint-100").string());
}

TEST_CASE("rewriting a step replaces it; debris of dead writers is cleaned, live ones are kept") {
  TempDir tmp("ckpt_replace");
  const fs::path out = tmp.path;
  const Checkpoint a = make_checkpoint(5, 1), b = make_checkpoint(5, 2);
  const std::string p = ll::write_checkpoint(out.string(), a, 3);
  CHECK(same_checkpoint(ll::read_checkpoint(p), a));
  CHECK(ll::write_checkpoint(out.string(), b, 3) == p);
  CHECK(same_checkpoint(ll::read_checkpoint(p), b));
  CHECK(entries(out) == std::set<std::string>{"checkpoint-00000005"});

  const pid_t dead = dead_pid();
  const pid_t alive = ::getppid();
  const std::string tmp_dead = fmt::format(".checkpoint-6.tmp-{}", dead);
  const std::string tmp_alive = fmt::format(".checkpoint-6.tmp-{}", alive);
  // A writer killed between moving checkpoint 3 aside and moving its replacement in.
  const std::string aside_orphan = fmt::format(".checkpoint-3.old-{}", dead);
  // A writer killed while deleting the old checkpoint 5 it had replaced.
  const std::string aside_done = fmt::format(".checkpoint-5.old-{}", dead);
  fs::create_directories(out / tmp_dead / "sub");
  ll::test::write_text(out / tmp_dead / "adapter_model.safetensors", "partial");
  fs::create_directories(out / tmp_alive);
  const Checkpoint c3 = make_checkpoint(3, 3);
  TempDir elsewhere("ckpt_replace_elsewhere");
  fs::copy(ll::write_checkpoint(elsewhere.path.string(), c3, 0), out / aside_orphan,
           fs::copy_options::recursive);
  fs::copy(p, out / aside_done, fs::copy_options::recursive);
  CHECK(ll::latest_checkpoint(out.string()) == p);

  const Checkpoint c7 = make_checkpoint(7, 7);
  ll::write_checkpoint(out.string(), c7, 0);
  CHECK(entries(out) == std::set<std::string>{"checkpoint-00000003", "checkpoint-00000005",
                                              "checkpoint-00000007", tmp_alive});
  CHECK(same_checkpoint(ll::read_checkpoint((out / "checkpoint-00000003").string()), c3));
  CHECK(same_checkpoint(ll::read_checkpoint(p), b));
}

TEST_CASE("a write that fails leaves earlier checkpoints as they were and no debris") {
  TempDir tmp("ckpt_fail");
  const fs::path out = tmp.path;
  const Checkpoint good = make_checkpoint(1, 1);
  ll::write_checkpoint(out.string(), good, 1);

  Checkpoint missing = make_checkpoint(2, 2);
  missing.moments.exp_avg_sq.erase("model.norm.weight");
  CHECK_THROWS_WITH_AS(ll::write_checkpoint(out.string(), missing, 1),
                       doctest::Contains("no exp_avg_sq.model.norm.weight moment"), ll::Error);
  Checkpoint extra = make_checkpoint(2, 2);
  extra.moments.exp_avg["model.layers.0.mlp.up_proj.weight"] =
      extra.moments.exp_avg.at("model.norm.weight");
  CHECK_THROWS_WITH_AS(ll::write_checkpoint(out.string(), extra, 1),
                       doctest::Contains("belongs to no trained parameter"), ll::Error);
  Checkpoint shape = make_checkpoint(2, 2);
  shape.moments.exp_avg.at("model.norm.weight").shape = {4, 4};
  CHECK_THROWS_WITH_AS(ll::write_checkpoint(out.string(), shape, 1),
                       doctest::Contains("has shape [4, 4], the parameter [16]"), ll::Error);
  Checkpoint nan = make_checkpoint(2, 2);
  nan.moments.exp_avg_sq.at("model.norm.weight").values[3] = -1.0f;
  CHECK_THROWS_WITH_AS(ll::write_checkpoint(out.string(), nan, 1),
                       doctest::Contains("element 3 is -1"), ll::Error);
  Checkpoint negative = make_checkpoint(-2, 2);
  CHECK_THROWS_AS(ll::write_checkpoint(out.string(), negative, 1), ll::Error);
  // Fails inside the temporary directory: the adapter is validated while it is written.
  Checkpoint bad_adapter = make_checkpoint(2, 2);
  const std::string b0 = ll::peft_lora_key(0, "q_proj", 'B');
  bad_adapter.adapter.lora_tensors.erase(b0);
  bad_adapter.moments.exp_avg.erase(b0);
  bad_adapter.moments.exp_avg_sq.erase(b0);
  CHECK_THROWS_WITH_AS(ll::write_checkpoint(out.string(), bad_adapter, 1),
                       doctest::Contains("has no matching"), ll::Error);

  CHECK(entries(out) == std::set<std::string>{"checkpoint-00000001"});
  CHECK(same_checkpoint(ll::read_checkpoint((out / "checkpoint-00000001").string()), good));
}

TEST_CASE("read_checkpoint refuses damaged checkpoints, naming the file and the fault") {
  TempDir tmp("ckpt_errors");
  const Checkpoint good = make_checkpoint(3, 4);
  int count = 0;
  auto fresh = [&]() {
    const fs::path out = tmp.path / fmt::format("run{}", count++);
    const fs::path dir = ll::write_checkpoint(out.string(), good, 0);
    REQUIRE_NOTHROW(ll::read_checkpoint(dir.string()));
    return dir;
  };
  auto edit_state = [](const fs::path& dir, const std::function<void(json&)>& edit) {
    json s = json::parse(ll::test::read_bytes(dir / "trainer_state.json"));
    edit(s);
    ll::test::write_text(dir / "trainer_state.json", s.dump(2));
  };

  SUBCASE("no such directory") {
    CHECK_THROWS_WITH_AS(ll::read_checkpoint(tmp.file("none")),
                         doctest::Contains("no such checkpoint directory"), ll::Error);
  }
  SUBCASE("missing files") {
    for (const char* file : {"trainer_state.json", "optimizer_state.safetensors",
                             "adapter_model.safetensors", "adapter_config.json"}) {
      const fs::path d = fresh();
      fs::remove(d / file);
      check_read_error(d, d / file, "missing");
    }
  }
  SUBCASE("unknown format or version") {
    const std::vector<std::pair<std::function<void(json&)>, std::string>> cases = {
        {[](json& s) { s["format"] = "hf-trainer-state"; }, "unknown format \"hf-trainer-state\""},
        {[](json& s) { s.erase("format"); }, "unknown format (none)"},
        {[](json& s) { s["version"] = 3; }, "version 3 is not supported"},
        {[](json& s) { s["version"] = 2; }, "\"world_size\" is missing"},
        {[](json& s) { s["version"] = "1"; }, "version \"1\" is not supported"},
        {[](json& s) { s.erase("version"); }, "version (none) is not supported"},
        {[](json& s) { s["attention_kernel"] = 3; }, "\"attention_kernel\" must be a string"},
    };
    for (const auto& [edit, fragment] : cases) {
      const fs::path d = fresh();
      edit_state(d, edit);
      check_read_error(d, d / "trainer_state.json", fragment);
    }
  }
  SUBCASE("malformed trainer_state.json") {
    const fs::path d = fresh();
    const fs::path f = d / "trainer_state.json";
    const std::string text = ll::test::read_bytes(f);
    ll::test::write_text(f, text.substr(0, text.size() / 2));
    check_read_error(d, f, "not valid JSON");
    ll::test::write_text(f, "");
    check_read_error(d, f, "not valid JSON");
    ll::test::write_text(f, "[]");
    check_read_error(d, f, "must be a JSON object");
    ll::test::write_text(f, "{\"format\": \"ll-train-state\xc0\"}");
    check_read_error(d, f, "not valid UTF-8");
  }
  SUBCASE("fields of the wrong type or range") {
    const std::vector<std::pair<std::function<void(json&)>, std::string>> cases = {
        {[](json& s) { s["step"] = -1; }, "\"step\" must be a non-negative integer"},
        {[](json& s) { s["step"] = 2.5; }, "\"step\" must be a non-negative integer"},
        {[](json& s) { s.erase("step"); }, "\"step\" is missing"},
        {[](json& s) { s.erase("loader"); }, "\"loader\" must be an object"},
        {[](json& s) { s["loader"].erase("index"); }, "\"loader.index\" is missing"},
        {[](json& s) { s["loader"]["epoch"] = "0"; }, "\"loader.epoch\" must be a non-negative"},
        {[](json& s) { s["seed"] = "12a"; }, "\"seed\" must be a decimal uint64 string"},
        {[](json& s) { s["seed"] = "18446744073709551616"; }, "\"seed\" must be a decimal"},
        {[](json& s) { s["seed"] = "-1"; }, "\"seed\" must be a decimal"},
        {[](json& s) { s["seed"] = ""; }, "\"seed\" must be a decimal"},
        {[](json& s) { s["seed"] = -5; }, "\"seed\" must be a decimal"},
        {[](json& s) { s.erase("seed"); }, "\"seed\" is missing"},
        {[](json& s) { s["tokens_seen"] = nullptr; }, "\"tokens_seen\" must be"},
        {[](json& s) { s["model_fingerprint"] = 3; }, "\"model_fingerprint\" must be a string"},
        {[](json& s) { s["step"] = 4; }, "step 4 disagrees with the directory name"},
    };
    for (const auto& [edit, fragment] : cases) {
      const fs::path d = fresh();
      edit_state(d, edit);
      check_read_error(d, d / "trainer_state.json", fragment);
    }
  }
  SUBCASE("a seed written as a plain number is accepted") {
    const fs::path d = fresh();
    edit_state(d, [](json& s) { s["seed"] = 12345; });
    CHECK(ll::read_checkpoint(d.string()).state.seed == 12345);
  }
  SUBCASE("moments missing, extra, misshapen, not F32, NaN, negative, misnamed, truncated") {
    const std::string q0a = ll::peft_lora_key(0, "q_proj", 'A');
    struct Case {
      std::function<void(std::map<std::string, HostTensor>&)> edit;
      std::string fragment;
      ll::DType dtype = ll::DType::F32;
    };
    const std::vector<Case> cases = {
        {[](auto& m) { m.erase("exp_avg_sq.model.norm.weight"); },
         "no moment \"exp_avg_sq.model.norm.weight\" for parameter \"model.norm.weight\""},
        {[&](auto& m) { m.erase("exp_avg." + q0a); }, "no moment \"exp_avg." + q0a + "\""},
        {[](auto& m) {
           m["exp_avg.model.layers.5.input_layernorm.weight"] = m.at("exp_avg.model.norm.weight");
         },
         "moment \"exp_avg.model.layers.5.input_layernorm.weight\" belongs to no trained "
         "parameter"},
        {[](auto& m) {
           m["exp_avg.model.norm.weight"].shape = {2, 8};
         },
         "moment \"exp_avg.model.norm.weight\" has shape [2, 8] but the parameter has [16]"},
        {[](auto& m) { m["exp_avg.model.norm.weight"].values[2] = std::nanf(""); },
         "tensor \"exp_avg.model.norm.weight\" element 2 is nan"},
        {[](auto& m) { m["exp_avg_sq.model.norm.weight"].values[1] = INFINITY; },
         "tensor \"exp_avg_sq.model.norm.weight\" element 1 is inf"},
        {[](auto& m) { m["exp_avg_sq.model.norm.weight"].values[0] = -0.5f; },
         "tensor \"exp_avg_sq.model.norm.weight\" element 0 is -0.5"},
        {[](auto& m) { m["step_count.model.norm.weight"] = m.at("exp_avg.model.norm.weight"); },
         "tensor \"step_count.model.norm.weight\" is not an optimizer moment"},
        {[](auto&) {}, "has dtype BF16; optimizer moments are F32", ll::DType::BF16},
    };
    for (const Case& c : cases) {
      const fs::path d = fresh();
      std::map<std::string, HostTensor> m = moment_file(good);
      c.edit(m);
      write_moments(d / "optimizer_state.safetensors", m, c.dtype);
      check_read_error(d, d / "optimizer_state.safetensors", c.fragment);
    }
    const fs::path d = fresh();
    const fs::path f = d / "optimizer_state.safetensors";
    const std::string bytes = ll::test::read_bytes(f);
    ll::test::write_text(f, bytes.substr(0, bytes.size() - 8));
    check_read_error(d, f, "truncated");
  }
  SUBCASE("damaged adapter files inside the checkpoint") {
    const fs::path d = fresh();
    const fs::path f = d / "adapter_model.safetensors";
    const std::string bytes = ll::test::read_bytes(f);
    ll::test::write_text(f, bytes.substr(0, bytes.size() - 1));
    check_read_error(d, f, "truncated");
    const fs::path e = fresh();
    ll::test::write_text(e / "adapter_config.json", "{\"peft_type\": ");
    check_read_error(e, e / "adapter_config.json", "not valid JSON");
  }
}

TEST_CASE("writers killed with SIGKILL at random moments never cost a complete checkpoint") {
  TempDir tmp("ckpt_sigkill");
  const fs::path out = tmp.path / "out";
  constexpr int64_t kRows = 65536, kHidden = 64;  // 16 MB of embeddings, 32 MB of moments

  const Checkpoint first = make_checkpoint(1, 100, kRows, kHidden);
  const std::string first_path = ll::write_checkpoint(out.string(), first, 0);
  // A child process that builds checkpoint step 2 from `seed` and writes it (replacing the
  // step 2 of an earlier trial when there is one). Returns once the child starts writing.
  auto start_writer = [&](uint64_t seed) {
    int ready[2];
    REQUIRE(::pipe(ready) == 0);
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::close(ready[0]);
      try {
        const Checkpoint c = make_checkpoint(2, seed, kRows, kHidden);
        const char go = 'w';
        if (::write(ready[1], &go, 1) != 1) ::_exit(2);
        ll::write_checkpoint(out.string(), c, 0);
      } catch (...) {
        ::_exit(1);
      }
      ::_exit(0);
    }
    ::close(ready[1]);
    char go = 0;
    const bool started = pid > 0 && ::read(ready[0], &go, 1) == 1;
    ::close(ready[0]);
    REQUIRE(started);
    return pid;
  };
  // How long write_checkpoint takes in a child, so that kill times cover all of it.
  const pid_t timed = start_writer(199);
  const auto t0 = std::chrono::steady_clock::now();
  int timed_status = 0;
  REQUIRE(::waitpid(timed, &timed_status, 0) == timed);
  REQUIRE((WIFEXITED(timed_status) && WEXITSTATUS(timed_status) == 0));
  const double write_us =
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();

  std::random_device device;
  std::mt19937_64 rng((uint64_t(device()) << 32) ^ device());
  double max_delay_us = 1.2 * write_us;  // narrowed when writers finish: the machine is faster
  uint64_t step2_seed = 199;             // whose step 2 is on disk, complete (0: none)
  int killed = 0, finished = 0, mid_write = 0;
  constexpr int kTrials = 12;
  for (int trial = 0; trial < kTrials; ++trial) {
    const uint64_t seed = 200 + uint64_t(trial);
    if (trial % 3 == 0) {  // sometimes a first write of step 2 rather than a replacement
      fs::remove_all(out / "checkpoint-00000002");
      step2_seed = 0;
    }
    const pid_t pid = start_writer(seed);
    const auto delay = std::chrono::microseconds(
        int64_t(std::uniform_real_distribution<double>(0.0, max_delay_us)(rng)));
    std::this_thread::sleep_for(delay);
    ::kill(pid, SIGKILL);
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    const bool done = WIFEXITED(status);
    CAPTURE(trial);
    CAPTURE(delay.count());
    REQUIRE((!done || WEXITSTATUS(status) == 0));  // the child's write itself never fails
    (done ? finished : killed) += 1;
    if (done) max_delay_us *= 0.75;
    // Killed while its temporary directory existed (files being written, or the replaced
    // checkpoint being deleted).
    if (fs::exists(out / fmt::format(".checkpoint-2.tmp-{}", pid))) ++mid_write;

    // The earlier checkpoint is intact, and the latest one is complete: step 1, or a step 2
    // that is entirely this trial's or entirely the one it was replacing.
    CHECK(same_checkpoint(ll::read_checkpoint(first_path), first));
    const auto latest = ll::latest_checkpoint(out.string());
    REQUIRE(latest.has_value());
    const Checkpoint read = ll::read_checkpoint(*latest);
    if (read.state.step == 1) {
      CHECK(*latest == first_path);
      CHECK_FALSE(done);
      step2_seed = 0;
    } else {
      REQUIRE(read.state.step == 2);
      const bool mine = read.state.model_fingerprint == fmt::format("fingerprint-{}", seed);
      const std::string previous = fmt::format("fingerprint-{}", step2_seed);
      REQUIRE((mine || (step2_seed != 0 && read.state.model_fingerprint == previous)));
      CHECK((mine || !done));
      if (mine) step2_seed = seed;
      CHECK(same_checkpoint(read, make_checkpoint(2, step2_seed, kRows, kHidden)));
    }
  }
  MESSAGE(
      fmt::format("checkpoint write {:.0f} ms; {} writers killed ({} while writing files), "
                  "{} finished",
                  write_us / 1000, killed, mid_write, finished));
  CHECK(killed >= 1);

  // The next writer removes what the killed ones left and keeps the last good checkpoints.
  const Checkpoint third = make_checkpoint(3, 300);
  ll::write_checkpoint(out.string(), third, 2);
  std::set<std::string> expected = {"checkpoint-00000003"};
  expected.insert(step2_seed != 0 ? "checkpoint-00000002" : "checkpoint-00000001");
  CHECK(entries(out) == expected);
  CHECK(same_checkpoint(ll::read_checkpoint(*ll::latest_checkpoint(out.string())), third));
}

// --- Sharded checkpoints ---------------------------------------------------------------------

namespace {

// W ranks as threads of this process: the two collectives write_sharded_checkpoint uses, over a
// std::barrier. The others are not needed here.
struct ThreadWorld {
  explicit ThreadWorld(int w) : size(w), sync(w), values(size_t(w)) {}
  int size;
  std::barrier<> sync;
  std::vector<uint64_t> values;  // [size], all_gather_u64's exchange
};

class ThreadCommunicator final : public ll::dist::Communicator {
 public:
  ThreadCommunicator(ThreadWorld& world, int rank) : world_(world), rank_(rank) {}
  int rank() const override { return rank_; }
  int world_size() const override { return world_.size; }
  int local_rank() const override { return rank_; }
  std::string backend_name() const override { return "threads"; }
  void all_reduce_sum(std::span<double>, const std::string&) override { unused(); }
  void reduce_scatter_sum(std::span<const float>, std::span<float>, std::span<const int64_t>,
                          const std::string&) override {
    unused();
  }
  void reduce_sum(std::span<const float>, std::span<float>, int, const std::string&) override {
    unused();
  }
  void all_gather(std::span<const float>, std::span<float>, std::span<const int64_t>,
                  const std::string&) override {
    unused();
  }
  void broadcast(std::span<std::byte>, int, const std::string&) override { unused(); }
  std::vector<uint64_t> all_gather_u64(uint64_t value, const std::string&) override {
    world_.values[size_t(rank_)] = value;
    world_.sync.arrive_and_wait();
    std::vector<uint64_t> out = world_.values;
    world_.sync.arrive_and_wait();
    return out;
  }
  void barrier(const std::string&) override { world_.sync.arrive_and_wait(); }
  [[noreturn]] void abort_world(const std::string& message, int) override {
    throw ll::Error(message);
  }

 private:
  [[noreturn]] void unused() { throw ll::Error("not used by checkpoints"); }
  ThreadWorld& world_;
  int rank_;
};

int64_t trained_elements(const Checkpoint& c) {
  int64_t n = 0;
  for (const auto* m : {&c.adapter.lora_tensors, &c.adapter.trainable_params})
    for (const auto& [name, t] : *m) n += int64_t(t.values.size());
  return n;
}

// Rank r's optimizer shard of `c`'s parameters split over `world` ranks: values from the seed.
ll::dist::OptimizerShard make_shard(const Checkpoint& c, int rank, int world, uint64_t seed) {
  const ll::dist::ShardLayout layout({trained_elements(c)}, world);
  ll::dist::OptimizerShard shard;
  shard.rank = rank;
  shard.world_size = world;
  const int64_t n = layout.shard_size(rank);
  shard.master = tensor({n}, seed, 1000 + uint64_t(rank), false).values;
  shard.exp_avg = tensor({n}, seed, 2000 + uint64_t(rank), false).values;
  shard.exp_avg_sq = tensor({n}, seed, 3000 + uint64_t(rank), true).values;
  return shard;
}

// Every rank of a world of `world` threads writes its part of checkpoint `c`; the paths they
// return.
std::vector<std::string> write_sharded(const fs::path& out, Checkpoint c, int world, uint64_t seed,
                                       int keep_last = 0) {
  c.state.world_size = world;
  ThreadWorld threads(world);
  std::vector<std::string> paths(static_cast<size_t>(world));
  std::vector<std::string> errors(static_cast<size_t>(world));
  std::vector<std::thread> ranks;
  for (int r = 0; r < world; ++r) {
    ranks.emplace_back([&, r] {
      ThreadCommunicator communicator(threads, r);
      Checkpoint mine;
      if (r == 0) {
        mine = c;
      } else {
        mine.state.step = c.state.step;  // all the other ranks know
      }
      try {
        paths[size_t(r)] = ll::write_sharded_checkpoint(
            out.string(), mine, make_shard(c, r, world, seed), communicator, keep_last);
      } catch (const ll::Error& e) {
        errors[size_t(r)] = e.what();
      }
    });
  }
  for (std::thread& t : ranks) t.join();
  for (const std::string& e : errors) REQUIRE_MESSAGE(e.empty(), e);
  return paths;
}

}  // namespace

TEST_CASE("sharded checkpoints: a shard per rank, the manifest commits them, bits round-trip") {
  TempDir tmp("ckpt_sharded");
  const fs::path out = tmp.path;
  const Checkpoint c = make_checkpoint(4, 11);
  const std::vector<std::string> paths = write_sharded(out, c, 3, 11);
  const fs::path dir = out / "checkpoint-00000004";
  for (const std::string& p : paths) CHECK(p == dir.string());  // every rank knows the path
  CHECK(entries(dir) == std::set<std::string>{"adapter_config.json", "adapter_model.safetensors",
                                              "trainable_params.safetensors", "trainer_state.json",
                                              "optimizer_shard-00000-of-00003.safetensors",
                                              "optimizer_shard-00001-of-00003.safetensors",
                                              "optimizer_shard-00002-of-00003.safetensors",
                                              "checkpoint_manifest.json"});
  CHECK(entries(out) == std::set<std::string>{"checkpoint-00000004"});  // no debris
  const json state = json::parse(ll::test::read_bytes(dir / "trainer_state.json"));
  CHECK(state.at("version") == 2);
  CHECK(state.at("world_size") == 3);
  const json manifest = json::parse(ll::test::read_bytes(dir / "checkpoint_manifest.json"));
  CHECK(manifest.at("format") == "ll-checkpoint-manifest");
  CHECK(manifest.at("step") == 4);
  CHECK(manifest.at("files").size() == 7);  // every file but itself, with its size
  CHECK(manifest.at("files").at("optimizer_shard-00001-of-00003.safetensors") ==
        fs::file_size(dir / "optimizer_shard-00001-of-00003.safetensors"));

  const Checkpoint back = ll::read_checkpoint(dir.string());
  CHECK(back.state.world_size == 3);
  CHECK(back.state.step == 4);
  CHECK(back.state.loader == c.state.loader);
  CHECK(back.state.seed == c.state.seed);
  CHECK(back.state.model_fingerprint == c.state.model_fingerprint);
  CHECK(same_bits(back.adapter.lora_tensors, c.adapter.lora_tensors));
  CHECK(same_bits(back.adapter.trainable_params, c.adapter.trainable_params));
  CHECK(back.moments.exp_avg.empty());
  REQUIRE(back.shards.size() == 3);
  int64_t total = 0;
  for (int r = 0; r < 3; ++r) {
    const ll::dist::OptimizerShard want = make_shard(c, r, 3, 11);
    const ll::dist::OptimizerShard& got = back.shards[size_t(r)];
    CHECK(got.rank == r);
    CHECK(got.world_size == 3);
    CHECK(got.master == want.master);
    CHECK(got.exp_avg == want.exp_avg);
    CHECK(got.exp_avg_sq == want.exp_avg_sq);
    total += int64_t(got.master.size());
  }
  CHECK(total == trained_elements(c));
  CHECK(ll::latest_checkpoint(out.string()) == dir.string());

  // Sharded and single-process checkpoints share the directory's history and pruning.
  ll::write_checkpoint(out.string(), make_checkpoint(6, 12), 0);
  write_sharded(out, make_checkpoint(8, 13), 2, 13, /*keep_last=*/2);
  CHECK(entries(out) == std::set<std::string>{"checkpoint-00000006", "checkpoint-00000008"});
  CHECK(ll::latest_checkpoint(out.string()) == (out / "checkpoint-00000008").string());
  CHECK(ll::read_checkpoint((out / "checkpoint-00000008").string()).shards.size() == 2);
}

TEST_CASE("a sharded checkpoint without its manifest is not committed; damage is named") {
  TempDir tmp("ckpt_sharded_errors");
  int count = 0;
  auto fresh = [&]() {
    const fs::path out = tmp.path / fmt::format("run{}", count++);
    ll::write_checkpoint(out.string(), make_checkpoint(2, 5), 0);  // an earlier, complete one
    write_sharded(out, make_checkpoint(3, 6), 3, 6);
    const fs::path dir = out / "checkpoint-00000003";
    REQUIRE_NOTHROW(ll::read_checkpoint(dir.string()));
    return dir;
  };
  const std::string shard1 = "optimizer_shard-00001-of-00003.safetensors";

  SUBCASE("no manifest: a run killed before the commit") {
    const fs::path d = fresh();
    fs::remove(d / "checkpoint_manifest.json");
    CHECK(ll::latest_checkpoint(d.parent_path().string()) ==
          (d.parent_path() / "checkpoint-00000002").string());
    check_read_error(d, d / "checkpoint_manifest.json", "never committed");
  }
  SUBCASE("a shard missing") {
    const fs::path d = fresh();
    fs::remove(d / shard1);
    check_read_error(d, d / shard1, "missing; the checkpoint is incomplete");
  }
  SUBCASE("a shard of another size than the manifest says") {
    const fs::path d = fresh();
    ll::test::write_text(d / shard1, ll::test::read_bytes(d / shard1) + "x");
    check_read_error(d, d / shard1, "the manifest says");
  }
  SUBCASE("shards swapped between ranks") {
    const fs::path d = fresh();
    const std::string shard2 = "optimizer_shard-00002-of-00003.safetensors";
    fs::rename(d / shard1, d / "swap");
    fs::rename(d / shard2, d / shard1);
    fs::rename(d / "swap", d / shard2);
    // Same sizes (the shards hold 1190, 1189, 1189 elements): the manifest passes, the shard's
    // own record does not.
    json m = json::parse(ll::test::read_bytes(d / "checkpoint_manifest.json"));
    std::swap(m["files"][shard1], m["files"][shard2]);
    ll::test::write_text(d / "checkpoint_manifest.json", m.dump());
    check_read_error(d, d / shard1, "holds the shard of rank 2 of 3, expected rank 1 of 3");
  }
  SUBCASE("the manifest of another step") {
    const fs::path d = fresh();
    json m = json::parse(ll::test::read_bytes(d / "checkpoint_manifest.json"));
    m["step"] = 5;
    ll::test::write_text(d / "checkpoint_manifest.json", m.dump());
    check_read_error(d, d / "checkpoint_manifest.json", "mixed from two runs");
  }
  SUBCASE("a world size that is no world") {
    const fs::path d = fresh();
    json s = json::parse(ll::test::read_bytes(d / "trainer_state.json"));
    s["world_size"] = 1;
    ll::test::write_text(d / "trainer_state.json", s.dump());
    check_read_error(d, d / "trainer_state.json", "\"world_size\" 1 is not a world of 2 to");
  }
  SUBCASE("a non-finite moment") {
    const fs::path d = fresh();
    Checkpoint c = make_checkpoint(3, 6);
    ll::dist::OptimizerShard bad = make_shard(c, 1, 3, 6);
    bad.exp_avg_sq[7] = -1.0f;
    const std::vector<ll::SafetensorsTensor> tensors = {
        {"master", ll::DType::F32, {int64_t(bad.master.size())}, bad.master.data()},
        {"exp_avg", ll::DType::F32, {int64_t(bad.exp_avg.size())}, bad.exp_avg.data()},
        {"exp_avg_sq", ll::DType::F32, {int64_t(bad.exp_avg_sq.size())}, bad.exp_avg_sq.data()}};
    ll::write_safetensors(
        (d / shard1).string(), tensors,
        {{"format", "ll-optimizer-shard"}, {"version", "1"}, {"rank", "1"}, {"world_size", "3"}});
    json m = json::parse(ll::test::read_bytes(d / "checkpoint_manifest.json"));
    m["files"][shard1] = fs::file_size(d / shard1);
    ll::test::write_text(d / "checkpoint_manifest.json", m.dump());
    check_read_error(d, d / shard1, "element 7 is -1");
  }
}
