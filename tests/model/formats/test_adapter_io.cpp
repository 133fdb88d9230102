// Adapter directories: PEFT key names, write -> read round trips, the adapter_config.json PEFT
// loads, directories PEFT itself wrote (tests/fixtures/peft_adapter_minimal, made by its
// make_fixture.py with peft 0.21), and every damaged-input error naming its file.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <limits>
#include <random>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "model/formats/adapter_io.h"
#include "model/formats/safetensors.h"
#include "tests/model/model_fixtures.h"
#include "tests/test_paths.h"

using ll::AdapterDir;
using ll::HostTensor;
using ll::test::TempDir;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kPrefix = "base_model.model.model.layers.";

HostTensor random_tensor(std::vector<int64_t> shape, std::mt19937& rng) {
  HostTensor t{std::move(shape), {}};
  int64_t n = 1;
  for (int64_t d : t.shape) n *= d;
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int64_t i = 0; i < n; ++i) t.values.push_back(normal(rng));
  // Values whose bits a lossy path would change: -0, a denormal, the largest float.
  if (n > 3) {
    t.values[0] = -0.0f;
    t.values[1] = std::numeric_limits<float>::denorm_min();
    t.values[2] = std::numeric_limits<float>::max();
  }
  return t;
}

// An adapter of `layers` Llama blocks (hidden 16, kv 8, intermediate 40) on `targets`.
AdapterDir make_adapter(int64_t layers, int64_t rank, std::vector<std::string> targets,
                        uint32_t seed, bool with_trainable = true) {
  std::mt19937 rng(seed);
  AdapterDir a;
  a.lora.rank = rank;
  a.lora.alpha = 16;
  a.lora.targets = std::move(targets);
  a.base_model = "meta-llama/Llama-2-7b-hf";
  auto in_out = [](const std::string& m) -> std::pair<int64_t, int64_t> {
    if (m == "k_proj" || m == "v_proj") return {16, 8};
    if (m == "gate_proj" || m == "up_proj") return {16, 40};
    if (m == "down_proj") return {40, 16};
    return {16, 16};
  };
  for (int64_t l = 0; l < layers; ++l) {
    for (const std::string& m : a.lora.targets) {
      const auto [in, out] = in_out(m);
      a.lora_tensors[ll::peft_lora_key(l, m, 'A')] = random_tensor({rank, in}, rng);
      a.lora_tensors[ll::peft_lora_key(l, m, 'B')] = random_tensor({out, rank}, rng);
    }
  }
  if (with_trainable) {
    a.trainable_params["model.embed_tokens.weight"] = random_tensor({32, 16}, rng);
    a.trainable_params["model.norm.weight"] = random_tensor({16}, rng);
    for (int64_t l = 0; l < layers; ++l) {
      a.trainable_params[fmt::format("model.layers.{}.input_layernorm.weight", l)] =
          random_tensor({16}, rng);
      a.trainable_params[fmt::format("model.layers.{}.post_attention_layernorm.weight", l)] =
          random_tensor({16}, rng);
    }
  }
  return a;
}

bool same_bits(const HostTensor& a, const HostTensor& b) {
  return a.shape == b.shape && a.values.size() == b.values.size() &&
         std::memcmp(a.values.data(), b.values.data(), a.values.size() * sizeof(float)) == 0;
}

bool same_tensors(const std::map<std::string, HostTensor>& a,
                  const std::map<std::string, HostTensor>& b) {
  if (a.size() != b.size()) return false;
  for (const auto& [name, t] : a) {
    auto it = b.find(name);
    if (it == b.end() || !same_bits(t, it->second)) return false;
  }
  return true;
}

// Writes `tensors` as F32 under exactly the given names (no validation: for damaged inputs).
void write_raw(const std::string& path, const std::map<std::string, HostTensor>& tensors) {
  std::vector<ll::SafetensorsTensor> views;
  for (const auto& [name, t] : tensors) {
    views.push_back({name, ll::DType::F32, t.shape, t.values.data()});
  }
  ll::write_safetensors(path, views, {{"format", "pt"}});
}

json read_json(const fs::path& path) { return json::parse(ll::test::read_bytes(path)); }

void write_json(const fs::path& path, const json& j) { ll::test::write_text(path, j.dump(2)); }

// Reading `dir` throws an ll::Error whose message names `file` and contains `fragment`.
void check_read_error(const fs::path& dir, const std::string& file, const std::string& fragment) {
  CAPTURE(fragment);
  std::string message;
  try {
    ll::read_adapter_dir(dir.string());
  } catch (const ll::Error& e) {
    message = e.what();
  }
  CAPTURE(message);
  REQUIRE_FALSE(message.empty());
  CHECK(message.find((dir / file).string()) != std::string::npos);
  CHECK(message.find(fragment) != std::string::npos);
}

}  // namespace

TEST_CASE("peft_lora_key formats PEFT's names for attention and MLP modules") {
  CHECK(ll::peft_lora_key(0, "q_proj", 'A') ==
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight");
  CHECK(ll::peft_lora_key(31, "o_proj", 'B') ==
        "base_model.model.model.layers.31.self_attn.o_proj.lora_B.weight");
  CHECK(ll::peft_lora_key(5, "gate_proj", 'A') ==
        "base_model.model.model.layers.5.mlp.gate_proj.lora_A.weight");
  CHECK(ll::peft_lora_key(79, "down_proj", 'B') ==
        "base_model.model.model.layers.79.mlp.down_proj.lora_B.weight");
  CHECK_THROWS_AS(ll::peft_lora_key(0, "lm_head", 'A'), ll::Error);
  CHECK_THROWS_AS(ll::peft_lora_key(0, "q_proj", 'C'), ll::Error);
  CHECK_THROWS_AS(ll::peft_lora_key(-1, "q_proj", 'A'), ll::Error);
}

TEST_CASE("parse_peft_lora_key inverts peft_lora_key and accepts the .default form") {
  for (int64_t layer :
       {int64_t(0), int64_t(1), int64_t(9), int64_t(10), int64_t(79), int64_t(123456789)}) {
    for (const std::string& module : ll::lora_target_names()) {
      for (char which : {'A', 'B'}) {
        const std::string key = ll::peft_lora_key(layer, module, which);
        CAPTURE(key);
        int64_t l = -1;
        std::string m;
        char w = 0;
        REQUIRE(ll::parse_peft_lora_key(key, &l, &m, &w));
        CHECK(l == layer);
        CHECK(m == module);
        CHECK(w == which);
        // PEFT before 0.3 kept the adapter name in the saved key.
        std::string old = key;
        old.replace(old.size() - std::strlen(".weight"), std::strlen(".weight"), ".default.weight");
        l = -1;
        m.clear();
        w = 0;
        REQUIRE(ll::parse_peft_lora_key(old, &l, &m, &w));
        CHECK(l == layer);
        CHECK(m == module);
        CHECK(w == which);
      }
    }
  }
  CHECK(ll::parse_peft_lora_key(ll::peft_lora_key(2, "v_proj", 'B'), nullptr, nullptr, nullptr));

  const std::string p = kPrefix;
  for (const std::string& bad : {
           p + "0.mlp.q_proj.lora_A.weight",           // q_proj lives in self_attn
           p + "0.self_attn.gate_proj.lora_A.weight",  // gate_proj lives in mlp
           p + "01.self_attn.q_proj.lora_A.weight",    // leading zero
           p + "-1.self_attn.q_proj.lora_A.weight",
           p + ".self_attn.q_proj.lora_A.weight",
           p + "1234567890.self_attn.q_proj.lora_A.weight",  // absurd layer index
           p + "0.self_attn.q_proj.weight",                  // the base weight
           p + "0.self_attn.q_proj.lora_C.weight",
           p + "0.self_attn.q_proj.lora_A.other.weight",  // another adapter's name
           p + "0.self_attn.q_proj.lora_A.weight.x",
           p + "0.self_attn.q_proj.lora_A.bias",
           p + "0.self_attn.q_proj.lora_embedding_A.weight",
           p + "0.self_attn.lm_head.lora_A.weight",
           p + "0.self_attn.q_proj",
           p + "0",
           p,
           std::string("model.layers.0.self_attn.q_proj.lora_A.weight"),
           std::string("base_model.model.model.embed_tokens.weight"),
           std::string("base_model.model.lm_head.lora_A.weight"),
           std::string(""),
       }) {
    CAPTURE(bad);
    int64_t l = 42;
    std::string m = "untouched";
    char w = 'x';
    CHECK_FALSE(ll::parse_peft_lora_key(bad, &l, &m, &w));
    CHECK(l == 42);
    CHECK(m == "untouched");
    CHECK(w == 'x');
  }
}

TEST_CASE("write then read gives identical bits, config and names") {
  TempDir tmp("adapter_roundtrip");
  for (const auto& targets : {std::vector<std::string>{"q_proj", "k_proj", "v_proj", "o_proj"},
                              ll::lora_target_names(), std::vector<std::string>{"down_proj"}}) {
    const AdapterDir a = make_adapter(3, 4, targets, 7);
    const fs::path dir = tmp.path / fmt::format("a{}", targets.size());
    ll::write_adapter_dir(dir.string(), a);  // creates the directory
    CHECK(fs::exists(dir / "adapter_model.safetensors"));
    CHECK(fs::exists(dir / "adapter_config.json"));
    CHECK(fs::exists(dir / "trainable_params.safetensors"));
    for (const auto& e : fs::directory_iterator(dir)) {  // no temporary file left behind
      CHECK(e.path().filename().string().find(".tmp") == std::string::npos);
    }
    const AdapterDir b = ll::read_adapter_dir(dir.string());
    CHECK(b.lora.rank == a.lora.rank);
    CHECK(b.lora.alpha == a.lora.alpha);
    CHECK(b.lora.targets == a.lora.targets);
    CHECK(b.base_model == a.base_model);
    CHECK(same_tensors(a.lora_tensors, b.lora_tensors));
    CHECK(same_tensors(a.trainable_params, b.trainable_params));

    // What is on disk is F32 under PEFT's names and the HF names.
    const ll::SafetensorsFile lora =
        ll::read_safetensors((dir / "adapter_model.safetensors").string());
    CHECK(lora.tensors.size() == a.lora_tensors.size());
    CHECK(lora.metadata.at("format") == "pt");
    for (const ll::TensorEntry& t : lora.tensors) {
      CHECK(t.dtype == ll::DType::F32);
      CHECK(t.name.rfind(kPrefix, 0) == 0);
    }
    const ll::SafetensorsFile trainable =
        ll::read_safetensors((dir / "trainable_params.safetensors").string());
    CHECK(trainable.find("model.embed_tokens.weight") != nullptr);
  }

  SUBCASE("a fractional alpha and an empty base model survive") {
    AdapterDir a = make_adapter(1, 2, {"v_proj"}, 3, /*with_trainable=*/false);
    a.lora.alpha = 2.75;
    a.base_model = "";
    ll::write_adapter_dir(tmp.file("frac"), a);
    CHECK_FALSE(fs::exists(tmp.path / "frac" / "trainable_params.safetensors"));
    const AdapterDir b = ll::read_adapter_dir(tmp.file("frac"));
    CHECK(b.lora.alpha == 2.75);
    CHECK(b.base_model.empty());
    CHECK(b.trainable_params.empty());
    CHECK(same_tensors(a.lora_tensors, b.lora_tensors));
  }

  SUBCASE("rewriting a directory replaces every file, a stale trainable file included") {
    ll::write_adapter_dir(tmp.file("again"), make_adapter(2, 4, {"q_proj", "v_proj"}, 1));
    const AdapterDir second = make_adapter(1, 2, {"o_proj"}, 2, /*with_trainable=*/false);
    ll::write_adapter_dir(tmp.file("again"), second);
    const AdapterDir b = ll::read_adapter_dir(tmp.file("again"));
    CHECK(b.lora.rank == 2);
    CHECK(b.lora.targets == std::vector<std::string>{"o_proj"});
    CHECK(same_tensors(second.lora_tensors, b.lora_tensors));
    CHECK(b.trainable_params.empty());
  }
}

TEST_CASE("adapter_config.json holds what PEFT needs to load the adapter") {
  TempDir tmp("adapter_config");
  AdapterDir a = make_adapter(2, 8, {"q_proj", "k_proj", "v_proj", "o_proj"}, 5);
  ll::write_adapter_dir(tmp.file("a"), a);
  const json c = read_json(tmp.path / "a" / "adapter_config.json");
  CHECK(c.at("peft_type") == "LORA");
  CHECK(c.at("task_type") == "CAUSAL_LM");
  CHECK(c.at("r").is_number_integer());
  CHECK(c.at("r") == 8);
  CHECK(c.at("lora_alpha").is_number_integer());  // PEFT's look: 16, not 16.0
  CHECK(c.at("lora_alpha") == 16);
  CHECK(c.at("lora_dropout").is_number());
  CHECK(c.at("lora_dropout") == 0.0);
  CHECK(c.at("target_modules") == json({"q_proj", "k_proj", "v_proj", "o_proj"}));
  CHECK(c.at("bias") == "none");
  CHECK(c.at("fan_in_fan_out") == false);
  CHECK(c.at("inference_mode") == true);
  CHECK(c.at("base_model_name_or_path") == "meta-llama/Llama-2-7b-hf");
  CHECK(c.at("modules_to_save").is_null());
  CHECK(c.at("init_lora_weights") == true);
  CHECK(c.at("use_rslora") == false);
  CHECK(c.at("use_dora") == false);
  CHECK(c.at("revision").is_null());
  CHECK(c.at("rank_pattern") == json::object());
  CHECK(c.at("alpha_pattern") == json::object());

  a.lora.alpha = 0.125;
  a.base_model.clear();
  ll::write_adapter_dir(tmp.file("b"), a);
  const json d = read_json(tmp.path / "b" / "adapter_config.json");
  CHECK(d.at("lora_alpha").is_number_float());
  CHECK(d.at("lora_alpha") == 0.125);
  CHECK(d.at("base_model_name_or_path").is_null());
}

TEST_CASE("an adapter directory written by PEFT 0.21 reads back with PEFT's values") {
  const fs::path dir = ll::test::source_path("tests/fixtures/peft_adapter_minimal");
  const json expected = read_json(dir / "expected.json");
  const AdapterDir a = ll::read_adapter_dir(dir.string());
  CHECK(a.lora.rank == 4);
  CHECK(a.lora.alpha == 8.0);
  CHECK(a.lora.scaling() == 2.0);
  // PEFT stores target_modules as a set and writes it sorted.
  CHECK(a.lora.targets == std::vector<std::string>{"down_proj", "q_proj", "v_proj"});
  CHECK(a.base_model.empty());  // PEFT writes null for a model built in memory
  REQUIRE(a.lora_tensors.size() == expected.at("lora").size());
  CHECK(a.lora_tensors.size() == 2 * 3 * 2);
  for (const auto& [key, e] : expected.at("lora").items()) {
    CAPTURE(key);
    REQUIRE(a.lora_tensors.count(key));
    const HostTensor& t = a.lora_tensors.at(key);
    CHECK(t.shape == e.at("shape").get<std::vector<int64_t>>());
    CHECK(t.values == e.at("values").get<std::vector<float>>());
  }
  CHECK(a.lora_tensors.at(ll::peft_lora_key(1, "down_proj", 'A')).shape ==
        std::vector<int64_t>{4, 40});
  CHECK(a.lora_tensors.at(ll::peft_lora_key(1, "v_proj", 'B')).shape == std::vector<int64_t>{8, 4});
  // LongLoRA's trainable_params carry the PeftModel prefix; it is stripped.
  REQUIRE(a.trainable_params.size() == expected.at("trainable").size());
  CHECK(a.trainable_params.size() == 1 + 1 + 2 * 2);
  for (const auto& [name, e] : expected.at("trainable").items()) {
    CAPTURE(name);
    REQUIRE(a.trainable_params.count(name));
    CHECK(a.trainable_params.at(name).values == e.at("values").get<std::vector<float>>());
  }
  CHECK(a.trainable_params.count("model.embed_tokens.weight"));
  CHECK(a.trainable_params.count("model.layers.1.post_attention_layernorm.weight"));

  SUBCASE("writing it back and reading again is lossless") {
    TempDir tmp("adapter_peft_rewrite");
    ll::write_adapter_dir(tmp.file("out"), a);
    const AdapterDir b = ll::read_adapter_dir(tmp.file("out"));
    CHECK(b.lora.targets == a.lora.targets);
    CHECK(same_tensors(a.lora_tensors, b.lora_tensors));
    CHECK(same_tensors(a.trainable_params, b.trainable_params));
  }

  SUBCASE("keys with PEFT's old adapter name (.lora_A.default.weight) read the same") {
    TempDir tmp("adapter_peft_default");
    const fs::path old = tmp.path / "old";
    fs::create_directories(old);
    fs::copy_file(dir / "adapter_config.json", old / "adapter_config.json");
    std::map<std::string, HostTensor> renamed;
    for (const auto& [key, t] : a.lora_tensors) {
      renamed[key.substr(0, key.size() - 7) + ".default.weight"] = t;
    }
    write_raw((old / "adapter_model.safetensors").string(), renamed);
    const AdapterDir b = ll::read_adapter_dir(old.string());
    CHECK(same_tensors(a.lora_tensors, b.lora_tensors));  // keys as peft_lora_key writes them
    CHECK(b.trainable_params.empty());                    // the file is optional
  }
}

TEST_CASE("the reference adapter saved by PEFT for tiny_llama reads") {
  const fs::path dir = ll::test::source_path("tests/fixtures/tiny_llama_peft_adapter");
  if (!fs::exists(dir / "adapter_config.json")) {
    MESSAGE("tests/fixtures/tiny_llama_peft_adapter is absent; skipped");
    return;
  }
  const json config = read_json(dir / "adapter_config.json");
  const AdapterDir a = ll::read_adapter_dir(dir.string());
  CHECK(a.lora.rank == config.at("r").get<int64_t>());
  CHECK(a.lora.alpha == config.at("lora_alpha").get<double>());
  CHECK(a.lora.targets == config.at("target_modules").get<std::vector<std::string>>());
  const ll::SafetensorsFile file =
      ll::read_safetensors((dir / "adapter_model.safetensors").string());
  CHECK(a.lora_tensors.size() == file.tensors.size());
  for (const ll::TensorEntry& t : file.tensors) {
    CAPTURE(t.name);
    REQUIRE(a.lora_tensors.count(t.name));
    CHECK(a.lora_tensors.at(t.name).values == file.read_f32(t.name));
  }
}

TEST_CASE("F16 and BF16 adapters are read and converted to fp32") {
  TempDir tmp("adapter_half");
  const AdapterDir a = make_adapter(2, 2, {"q_proj", "v_proj"}, 11);
  ll::write_adapter_dir(tmp.file("f32"), a);
  for (ll::DType dtype : {ll::DType::F16, ll::DType::BF16}) {
    CAPTURE(ll::dtype_name(dtype));
    const fs::path dir = tmp.path / std::string(ll::dtype_name(dtype));
    fs::create_directories(dir);
    fs::copy_file(tmp.path / "f32" / "adapter_config.json", dir / "adapter_config.json");
    const ll::SafetensorsFile src =
        ll::read_safetensors((tmp.path / "f32" / "adapter_model.safetensors").string());
    std::vector<ll::test::EncodedTensor> encoded;
    for (const ll::TensorEntry& t : src.tensors) {
      // The extreme test values do not fit F16; keep the rest.
      ll::TensorEntry clipped = t;
      std::vector<float> v = src.read_f32(t.name);
      for (float& x : v) x = std::clamp(x, -100.0f, 100.0f);
      clipped.data = reinterpret_cast<const uint8_t*>(v.data());
      encoded.push_back(ll::test::encode(clipped, dtype));
    }
    ll::write_safetensors((dir / "adapter_model.safetensors").string(), ll::test::views(encoded));
    const AdapterDir b = ll::read_adapter_dir(dir.string());
    REQUIRE(b.lora_tensors.size() == a.lora_tensors.size());
    for (const ll::test::EncodedTensor& e : encoded) {
      const HostTensor& t = b.lora_tensors.at(e.name);
      std::vector<float> expect(t.values.size());
      ll::convert_to_f32(dtype, e.bytes.data(), expect.data(), expect.size());
      CHECK(t.values == expect);
      const auto& orig = a.lora_tensors.at(e.name).values;
      for (size_t i = 3; i < orig.size(); ++i) {
        CHECK(std::fabs(t.values[i] - std::clamp(orig[i], -100.0f, 100.0f)) <=
              1e-2f * std::fabs(orig[i]) + 1e-4f);
      }
    }
  }
}

TEST_CASE("damaged or unsupported adapter directories are refused, naming the file") {
  TempDir tmp("adapter_errors");
  const AdapterDir good = make_adapter(2, 4, {"q_proj", "v_proj"}, 21);
  int count = 0;
  // A fresh copy of the good adapter for each damage.
  auto fresh = [&]() {
    const fs::path dir = tmp.path / fmt::format("case{}", count++);
    ll::write_adapter_dir(dir.string(), good);
    REQUIRE_NOTHROW(ll::read_adapter_dir(dir.string()));
    return dir;
  };
  auto edit_config = [](const fs::path& dir, const std::function<void(json&)>& edit) {
    json c = read_json(dir / "adapter_config.json");
    edit(c);
    write_json(dir / "adapter_config.json", c);
  };
  auto edit_lora = [](const fs::path& dir,
                      const std::function<void(std::map<std::string, HostTensor>&)>& edit) {
    const AdapterDir a = ll::read_adapter_dir(dir.string());
    std::map<std::string, HostTensor> t = a.lora_tensors;
    edit(t);
    write_raw((dir / "adapter_model.safetensors").string(), t);
  };
  const std::string q0a = ll::peft_lora_key(0, "q_proj", 'A');
  const std::string q0b = ll::peft_lora_key(0, "q_proj", 'B');
  const std::string cfg = "adapter_config.json";
  const std::string model = "adapter_model.safetensors";
  const std::string trainable = "trainable_params.safetensors";

  SUBCASE("no such directory") {
    CHECK_THROWS_WITH_AS(ll::read_adapter_dir(tmp.file("nope")),
                         doctest::Contains("no such adapter directory"), ll::Error);
  }
  SUBCASE("missing adapter_config.json") {
    const fs::path d = fresh();
    fs::remove(d / cfg);
    check_read_error(d, cfg, "missing");
  }
  SUBCASE("missing adapter_model.safetensors") {
    const fs::path d = fresh();
    fs::remove(d / model);
    check_read_error(d, model, "missing");
  }
  SUBCASE("adapter_model.bin only: the message says how to convert it") {
    const fs::path d = fresh();
    fs::remove(d / model);
    ll::test::write_text(d / "adapter_model.bin", "PK\x03\x04 pickle");
    check_read_error(d, model, "adapter_model.bin (a PyTorch pickle) is not supported");
    check_read_error(d, model, "save_file(torch.load(");
  }
  SUBCASE("truncated adapter_model.safetensors") {
    const fs::path d = fresh();
    const std::string bytes = ll::test::read_bytes(d / model);
    for (size_t keep : {size_t(0), size_t(5), size_t(100), bytes.size() / 2, bytes.size() - 1}) {
      CAPTURE(keep);
      ll::test::write_text(d / model, bytes.substr(0, keep));
      check_read_error(d, model, "");
    }
    ll::test::write_text(d / model, bytes.substr(0, bytes.size() - 4));
    check_read_error(d, model, "truncated");
  }
  SUBCASE("truncated trainable_params.safetensors") {
    const fs::path d = fresh();
    const std::string bytes = ll::test::read_bytes(d / trainable);
    ll::test::write_text(d / trainable, bytes.substr(0, bytes.size() - 1));
    check_read_error(d, trainable, "truncated");
  }
  SUBCASE("an A without its B, a B without its A") {
    const fs::path d = fresh();
    edit_lora(d, [&](auto& t) { t.erase(q0b); });
    check_read_error(d, model, "\"" + q0a + "\" has no matching \"" + q0b + "\"");
    const fs::path e = fresh();
    edit_lora(e, [&](auto& t) { t.erase(q0a); });
    check_read_error(e, model, "\"" + q0b + "\" has no matching \"" + q0a + "\"");
  }
  SUBCASE("a layer without one of the target modules") {
    const fs::path d = fresh();
    edit_lora(d, [&](auto& t) {
      t.erase(ll::peft_lora_key(0, "v_proj", 'A'));
      t.erase(ll::peft_lora_key(0, "v_proj", 'B'));
    });
    check_read_error(d, model, "layer 0 has no v_proj adapter");
  }
  SUBCASE("no LoRA tensor at all") {
    const fs::path d = fresh();
    write_raw((d / model).string(), {});
    check_read_error(d, model, "holds no LoRA matrices");
  }
  SUBCASE("a rank that disagrees with r") {
    const fs::path d = fresh();
    edit_config(d, [](json& c) { c["r"] = 8; });
    check_read_error(d, model, "disagrees with r = 8");
    const fs::path e = fresh();
    edit_lora(e, [&](auto& t) { t[q0b].shape = {8, 8}; });  // the same 64 values as [out, 8]
    check_read_error(e, model, "\"" + q0b + "\" has shape [8, 8], rank 8 disagrees with r = 4");
  }
  SUBCASE("a 3-D LoRA matrix") {
    const fs::path d = fresh();
    edit_lora(d, [&](auto& t) { t[q0a].shape = {4, 16, 1}; });
    check_read_error(d, model, "a LoRA matrix is 2-D");
  }
  SUBCASE("shapes that differ between layers") {
    const fs::path d = fresh();
    std::mt19937 rng(3);
    edit_lora(d, [&](auto& t) {
      t[ll::peft_lora_key(1, "q_proj", 'A')] = random_tensor({4, 12}, rng);
    });
    check_read_error(d, model, "q_proj of layer 1 has shapes [4, 12]");
  }
  SUBCASE("unknown target module in the config") {
    const fs::path d = fresh();
    edit_config(d, [](json& c) { c["target_modules"] = {"q_proj", "v_proj", "lm_head"}; });
    check_read_error(d, cfg, "unknown LoRA target module \"lm_head\"");
  }
  SUBCASE("a tensor of a module outside target_modules") {
    const fs::path d = fresh();
    edit_config(d, [](json& c) { c["target_modules"] = {"q_proj"}; });
    check_read_error(d, model, "adapts v_proj, which is not in target_modules [q_proj]");
  }
  SUBCASE("a tensor that is not a LoRA matrix") {
    const fs::path d = fresh();
    std::mt19937 rng(4);
    edit_lora(d, [&](auto& t) {
      t["base_model.model.model.embed_tokens.weight"] = random_tensor({32, 16}, rng);
    });
    check_read_error(d, model,
                     "\"base_model.model.model.embed_tokens.weight\" is not a LoRA matrix");
  }
  SUBCASE("the same matrix with and without the adapter name") {
    const fs::path d = fresh();
    edit_lora(d, [&](auto& t) { t[q0a.substr(0, q0a.size() - 7) + ".default.weight"] = t[q0a]; });
    check_read_error(d, model, "appears twice");
  }
  SUBCASE("an integer tensor") {
    const fs::path d = fresh();
    std::vector<int32_t> ints(64, 1);
    std::vector<ll::SafetensorsTensor> views;
    const AdapterDir a = ll::read_adapter_dir(d.string());
    for (const auto& [name, t] : a.lora_tensors) {
      if (name == q0a) {
        views.push_back({name, ll::DType::I32, t.shape, ints.data()});
      } else {
        views.push_back({name, ll::DType::F32, t.shape, t.values.data()});
      }
    }
    ll::write_safetensors((d / model).string(), views);
    check_read_error(d, model, "a floating tensor (F32, F16, BF16) is needed");
  }
  SUBCASE("NaN and Inf name the tensor") {
    const fs::path d = fresh();
    edit_lora(d, [&](auto& t) { t[q0b].values[5] = std::nanf(""); });
    check_read_error(d, model, "tensor \"" + q0b + "\" element 5 is nan");
    const fs::path e = fresh();
    std::map<std::string, HostTensor> params = good.trainable_params;
    params["model.norm.weight"].values[3] = -std::numeric_limits<float>::infinity();
    write_raw((e / trainable).string(), params);
    check_read_error(e, trainable, "tensor \"model.norm.weight\" element 3 is -inf");
  }
  SUBCASE("bad JSON, wrong JSON types, bad UTF-8") {
    const fs::path d = fresh();
    ll::test::write_text(d / cfg, "{\"peft_type\": \"LORA\", \"r\": 4,");
    check_read_error(d, cfg, "not valid JSON");
    ll::test::write_text(d / cfg, "");
    check_read_error(d, cfg, "not valid JSON");
    ll::test::write_text(d / cfg, "[1, 2]");
    check_read_error(d, cfg, "must be a JSON object");
    ll::test::write_text(d / cfg, "{\"peft_type\": \"LO\xff\"}");
    check_read_error(d, cfg, "not valid UTF-8");
    ll::test::write_text(d / cfg, "{\"peft_type\": \"LORA\", \"peft_type\": \"LORA\"}");
    check_read_error(d, cfg, "duplicate key \"peft_type\"");
  }
  SUBCASE("config fields PEFT would not have written") {
    const std::vector<std::pair<std::function<void(json&)>, std::string>> cases = {
        {[](json& c) { c.erase("peft_type"); }, "no \"peft_type\""},
        {[](json& c) { c["peft_type"] = "PREFIX_TUNING"; }, "peft_type is \"PREFIX_TUNING\""},
        {[](json& c) { c["peft_type"] = "ADALORA"; }, "only LORA adapters are supported"},
        {[](json& c) { c.erase("r"); }, "\"r\" (the LoRA rank) must be an integer"},
        {[](json& c) { c["r"] = "4"; }, "\"r\" (the LoRA rank) must be an integer"},
        {[](json& c) { c["r"] = 4.5; }, "must be an integer"},
        {[](json& c) { c["r"] = 0; }, "is not a valid LoRA rank"},
        {[](json& c) { c["r"] = -4; }, "is not a valid LoRA rank"},
        {[](json& c) { c["lora_alpha"] = "16"; }, "\"lora_alpha\" must be a number"},
        {[](json& c) { c["lora_alpha"] = 0; }, "alpha must be a positive number"},
        {[](json& c) { c.erase("target_modules"); }, "no \"target_modules\""},
        {[](json& c) { c["target_modules"] = nullptr; }, "no \"target_modules\""},
        {[](json& c) { c["target_modules"] = ".*q_proj"; }, "is a regular expression"},
        {[](json& c) {
           c["target_modules"] = {"q_proj", 3};
         },
         "entry 3 is not a module name"},
        {[](json& c) {
           c["target_modules"] = {"q_proj", "q_proj"};
         },
         "listed twice"},
        {[](json& c) { c["use_rslora"] = true; }, "\"use_rslora\" is true"},
        {[](json& c) { c["use_dora"] = true; }, "\"use_dora\" is true: DoRA is not supported"},
        {[](json& c) { c["fan_in_fan_out"] = true; }, "\"fan_in_fan_out\" is true"},
        {[](json& c) { c["use_rslora"] = "yes"; }, "\"use_rslora\" must be true or false"},
        {[](json& c) {
           c["rank_pattern"] = {{"q_proj", 16}};
         },
         "\"rank_pattern\""},
        {[](json& c) {
           c["alpha_pattern"] = {{"q_proj", 16}};
         },
         "\"alpha_pattern\""},
        {[](json& c) { c["base_model_name_or_path"] = 7; }, "\"base_model_name_or_path\" must be"},
        {[](json& c) { c["layers_to_transform"] = {"a"}; }, "layers_to_transform entry"},
    };
    for (const auto& [edit, fragment] : cases) {
      const fs::path d = fresh();
      edit_config(d, edit);
      check_read_error(d, cfg, fragment);
    }
  }
  SUBCASE("layers_to_transform restricts the layers that must be there") {
    const fs::path d = fresh();
    edit_lora(d, [&](auto& t) {
      for (const std::string m : {"q_proj", "v_proj"}) {
        for (char w : {'A', 'B'}) t.erase(ll::peft_lora_key(0, m, w));
      }
    });
    check_read_error(d, model, "layer 0 has no q_proj adapter");
    edit_config(d, [](json& c) { c["layers_to_transform"] = {1}; });
    CHECK(ll::read_adapter_dir(d.string()).lora_tensors.size() == 4);
    edit_config(d, [](json& c) { c["layers_to_transform"] = 1; });
    CHECK(ll::read_adapter_dir(d.string()).lora_tensors.size() == 4);
    edit_config(d, [](json& c) { c["layers_to_transform"] = {0}; });
    check_read_error(d, model, "adapts layer 1, which is not in layers_to_transform");
  }
  SUBCASE("a trainable tensor with and without the PeftModel prefix") {
    const fs::path d = fresh();
    std::map<std::string, HostTensor> params = good.trainable_params;
    params["base_model.model.model.norm.weight"] = params.at("model.norm.weight");
    write_raw((d / trainable).string(), params);
    check_read_error(d, trainable, "\"model.norm.weight\" appears twice");
  }
  SUBCASE("a LoRA matrix in trainable_params") {
    const fs::path d = fresh();
    std::map<std::string, HostTensor> params = good.trainable_params;
    params[q0a] = good.lora_tensors.at(q0a);
    write_raw((d / trainable).string(), params);
    check_read_error(d, trainable, "is not a base-model parameter");
  }
  SUBCASE("ignored and accepted: lora_dropout, task_type, unknown keys, layers_to_transform null") {
    const fs::path d = fresh();
    edit_config(d, [](json& c) {
      c["lora_dropout"] = 0.1;
      c["peft_version"] = "0.21.2";
      c["some_future_key"] = {1, 2};
      c["layers_to_transform"] = nullptr;
      c["use_dora"] = nullptr;
      c.erase("lora_alpha");  // PEFT's default 8
    });
    const AdapterDir a = ll::read_adapter_dir(d.string());
    CHECK(a.lora.alpha == 8.0);
    CHECK(same_tensors(a.lora_tensors, good.lora_tensors));
  }
  SUBCASE("target_modules \"all-linear\" means every linear layer") {
    const fs::path d = fresh();
    edit_config(d, [](json& c) { c["target_modules"] = "all-linear"; });
    check_read_error(d, model, "layer 0 has no k_proj adapter");  // targets now all seven
  }
}

TEST_CASE("write_adapter_dir refuses what it could not read back") {
  TempDir tmp("adapter_write_errors");
  const std::string dir = tmp.file("out");
  auto refuses = [&](const AdapterDir& a, const std::string& fragment) {
    CAPTURE(fragment);
    CHECK_THROWS_WITH_AS(ll::write_adapter_dir(dir, a), doctest::Contains(fragment.c_str()),
                         ll::Error);
    CHECK_FALSE(fs::exists(fs::path(dir) / "adapter_config.json"));
  };
  const AdapterDir good = make_adapter(2, 4, {"q_proj", "v_proj"}, 8);
  const std::string q0a = ll::peft_lora_key(0, "q_proj", 'A');
  AdapterDir a = good;
  a.lora.rank = 0;
  refuses(a, "cannot write adapter " + dir + ": LoRA rank must be at least 1");
  a = good;
  a.lora.targets = {"q_proj", "v_proj", "up_proj"};
  refuses(a, "layer 0 has no up_proj adapter");
  a = good;
  a.lora_tensors.erase(ll::peft_lora_key(1, "v_proj", 'B'));
  refuses(a, "has no matching");
  a = good;
  a.lora_tensors.at(q0a).values.pop_back();
  refuses(a, "has shape [4, 16] but 63 values");
  a = good;
  a.lora_tensors.at(q0a).values[7] = std::nanf("");
  refuses(a, "element 7 is nan");
  a = good;
  a.trainable_params.at("model.norm.weight").values[0] = std::numeric_limits<float>::infinity();
  refuses(a, "\"model.norm.weight\" element 0 is inf");
  a = good;
  a.lora_tensors["model.layers.0.self_attn.q_proj.weight"] = good.lora_tensors.at(q0a);
  refuses(a, "is not a LoRA matrix");
  a = good;
  a.trainable_params["base_model.model.model.norm.weight"] =
      good.trainable_params.at("model.norm.weight");
  refuses(a, "must be named as in the base model");
  a = good;
  a.lora_tensors.at(q0a).shape = {2, 32};
  refuses(a, "rank 2 disagrees with r = 4");
  CHECK_NOTHROW(ll::write_adapter_dir(dir, good));
}

TEST_CASE("longlora.json records the training's position interpolation, versioned and checked") {
  TempDir tmp("adapter_longlora");
  const std::string dir = tmp.file("out");
  const fs::path record = fs::path(dir) / "longlora.json";
  AdapterDir a = make_adapter(2, 4, {"q_proj", "v_proj"}, 9);
  a.longlora = ll::LongLoraRecord{ll::linear_rope_scaling(25.0), 100000};
  ll::write_adapter_dir(dir, a);
  const json doc = read_json(record);
  CHECK(doc == json{{"format", "longlora-adapter"},
                    {"version", 2},
                    {"rope_scaling", {{"type", "linear"}, {"factor", 25.0}}},
                    {"context_length", 100000}});
  // PEFT's config stays PEFT's: no keys of ours in it.
  CHECK_FALSE(read_json(fs::path(dir) / "adapter_config.json").contains("rope_scaling"));
  AdapterDir back = ll::read_adapter_dir(dir);
  REQUIRE(back.longlora.has_value());
  CHECK(back.longlora->rope == ll::linear_rope_scaling(25.0));
  CHECK(back.longlora->context_length == 100000);

  // Absent (PEFT's adapters): no record; a save without one removes a stale file.
  a.longlora.reset();
  ll::write_adapter_dir(dir, a);
  CHECK_FALSE(fs::exists(record));
  CHECK_FALSE(ll::read_adapter_dir(dir).longlora.has_value());

  // Damaged or foreign records name the file.
  const json good = doc;
  const std::pair<json, std::string> bad[] = {
      {json{{"format", "something-else"}, {"version", 1}}, "\"format\" must be"},
      {[&] {
         json j = good;
         j["version"] = 3;
         return j;
       }(),
       "version 3 is not supported"},
      {[&] {
         json j = good;
         j.erase("version");
         return j;
       }(),
       "\"version\" must be an integer"},
      {[&] {
         json j = good;
         j["rope_scaling"]["factor"] = 0.5;
         return j;
       }(),
       "must be a finite number >= 1"},
      {[&] {
         json j = good;
         j["rope_scaling"]["factor"] = "2";
         return j;
       }(),
       "\"factor\" must be a number"},
      {[&] {
         json j = good;
         j["rope_scaling"]["type"] = "longrope";
         return j;
       }(),
       "\"longrope\" is not supported"},
      {[&] {
         json j = good;
         j.erase("rope_scaling");
         return j;
       }(),
       "\"rope_scaling\" is missing"},
      {[&] {
         json j = good;
         j["version"] = 1;
         j["rope_scaling"] = {{"type", "yarn"}, {"factor", 2.0}};
         return j;
       }(),
       "not supported in version 1"},
      {[&] {
         json j = good;
         j["version"] = 1;
         j["rope_scaling"]["factor"] = "2";
         return j;
       }(),
       "rope_scaling.factor must be a number"},
      {[&] {
         json j = good;
         j["context_length"] = 0;
         return j;
       }(),
       "context_length 0 must be at least 1"},
      {[&] {
         json j = good;
         j.erase("context_length");
         return j;
       }(),
       "\"context_length\" must be an integer"},
      {json::array(), "must be a JSON object"},
  };
  for (const auto& [content, fragment] : bad) {
    write_json(record, content);
    check_read_error(dir, "longlora.json", fragment);
  }
  ll::test::write_text(record, "{\"format\": ");
  check_read_error(dir, "longlora.json", "");
  // Writing refuses a record it could not read back.
  a.longlora = ll::LongLoraRecord{ll::linear_rope_scaling(2.0), 10};
  a.longlora->rope.factor = std::nan("");
  CHECK_THROWS_WITH_AS(ll::write_adapter_dir(dir, a), doctest::Contains("finite number >= 1"),
                       ll::Error);
}

TEST_CASE("longlora.json: every RoPE scaling type round trips; version 1 files still read") {
  TempDir tmp("adapter_longlora_types");
  const std::string dir = tmp.file("out");
  const fs::path record = fs::path(dir) / "longlora.json";
  AdapterDir a = make_adapter(2, 4, {"q_proj"}, 3);
  ll::RopeScaling yarn;
  yarn.type = ll::RopeType::Yarn;
  yarn.factor = 4.0;
  yarn.original_max_position_embeddings = 32768;
  yarn.beta_fast = 16.0;
  yarn.mscale = 0.707;
  yarn.truncate = false;
  ll::RopeScaling llama3;
  llama3.type = ll::RopeType::Llama3;
  llama3.factor = 64.0;
  llama3.original_max_position_embeddings = 8192;
  for (const ll::RopeScaling& rope :
       {ll::RopeScaling{}, ll::linear_rope_scaling(3.0), yarn, llama3}) {
    a.longlora = ll::LongLoraRecord{rope, 524288};
    ll::write_adapter_dir(dir, a);
    const AdapterDir back = ll::read_adapter_dir(dir);
    REQUIRE(back.longlora.has_value());
    CHECK(back.longlora->rope == rope);
    CHECK(back.longlora->context_length == 524288);
  }
  // A version 1 record as engines before RoPE scaling types wrote it.
  write_json(record, json{{"format", "longlora-adapter"},
                          {"version", 1},
                          {"rope_scaling", {{"type", "linear"}, {"factor", 2.0}}},
                          {"context_length", 8192}});
  const AdapterDir old = ll::read_adapter_dir(dir);
  REQUIRE(old.longlora.has_value());
  CHECK(old.longlora->rope == ll::linear_rope_scaling(2.0));
  CHECK(old.longlora->context_length == 8192);
}
