// A corpus of damaged and hostile model files, generated here into a temp directory. Each must
// be refused with an ll::Error whose message names the file and the fault, under ASan and
// UBSan: no crash, no out-of-bounds read, no silent acceptance.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <functional>

#include "model/formats/bin_format.h"
#include "model/formats/safetensors.h"
#include "model/formats/tensor_source.h"
#include "model/llama_weights.h"
#include "tests/model/model_fixtures.h"

using ll::DType;
using ll::test::TempDir;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

// Opens `path` the way the tools do and loads the weights.
void load(const fs::path& path) { ll::load_llama_weights(*ll::open_model_files(path.string())); }

// Runs f; it must throw ll::Error mentioning `path` and `fault`.
void expect_refused(const std::function<void()>& f, const fs::path& path,
                    const std::string& fault) {
  std::string msg;
  bool other = false;
  try {
    f();
  } catch (const ll::Error& e) {
    msg = e.what();
  } catch (...) {
    other = true;
  }
  INFO("path: ", path.string(), "\nfault: ", fault, "\nmessage: ", msg);
  CHECK_FALSE(other);
  REQUIRE_FALSE(msg.empty());
  CHECK(msg.find(path.string()) != std::string::npos);
  CHECK(msg.find(fault) != std::string::npos);
}

struct Corpus {
  TempDir dir{"hostile"};
  ll::LlamaWeights weights = ll::random_llama_weights(ll::test::tiny_config(), 99);
  int next = 0;

  // A fresh HF directory with a good config.json and the given raw model.safetensors.
  fs::path raw_model(const std::string& header, const std::string& data = "",
                     int64_t declared_len = -1) {
    const fs::path d = dir.path / fmt::format("case{}", next++);
    fs::create_directories(d);
    ll::test::write_text(d / "config.json", ll::test::tiny_config_json().dump());
    ll::test::write_raw_safetensors(d / "model.safetensors", header, data, declared_len);
    return d;
  }

  // A fresh HF directory holding the corpus weights after `edit` changed their tensor list.
  fs::path edited_model(const std::function<void(std::vector<ll::test::EncodedTensor>&)>& edit,
                        DType dtype = DType::F32) {
    const fs::path d = dir.path / fmt::format("case{}", next++);
    fs::create_directories(d);
    ll::test::write_text(d / "config.json", ll::test::tiny_config_json().dump());
    std::vector<ll::test::EncodedTensor> enc;
    for (const ll::TensorEntry& t : ll::llama_weights_tensors(weights)) {
      enc.push_back(ll::test::encode(t, dtype));
    }
    edit(enc);
    ll::write_safetensors((d / "model.safetensors").string(), ll::test::views(enc));
    return d;
  }

  fs::path good_model(int shards = 1) {
    const fs::path d = dir.path / fmt::format("case{}", next++);
    ll::test::write_hf_model(d, weights, DType::F32, shards);
    return d;
  }

  fs::path good_bin() {
    const fs::path p = dir.path / fmt::format("case{}.bin", next++);
    ll::write_model_bin(p.string(), weights.config, DType::BF16,
                        ll::llama_weights_tensors(weights));
    return p;
  }
};

ll::test::EncodedTensor* find(std::vector<ll::test::EncodedTensor>& v, const std::string& name) {
  for (auto& t : v) {
    if (t.name == name) return &t;
  }
  FAIL("no tensor ", name);
  return nullptr;
}

std::string f32_entry(const char* name, int n, uint64_t begin, uint64_t end) {
  return fmt::format("\"{}\":{{\"dtype\":\"F32\",\"shape\":[{}],\"data_offsets\":[{},{}]}}", name,
                     n, begin, end);
}

}  // namespace

TEST_CASE("the corpus itself is sound: the undamaged originals load") {
  Corpus c;
  load(c.good_model());
  load(c.good_model(2));
  load(c.good_bin());
}

TEST_CASE("safetensors structure: size, header length, UTF-8, JSON") {
  Corpus c;
  fs::path d = c.good_model();
  const fs::path st = d / "model.safetensors";
  fs::resize_file(st, fs::file_size(st) - 10);
  expect_refused([&] { load(d); }, st, "truncated");

  d = c.raw_model("");
  ll::test::write_text(d / "model.safetensors", "abc");
  expect_refused([&] { load(d); }, d / "model.safetensors", "too small");

  d = c.raw_model("", "", -1);
  ll::test::write_text(d / "model.safetensors", "");
  expect_refused([&] { load(d); }, d / "model.safetensors", "too small");

  d = c.raw_model("{}", "", 200'000'000);
  expect_refused([&] { load(d); }, d / "model.safetensors", "100 MB");

  d = c.raw_model("{}", "", int64_t(1) << 62);
  expect_refused([&] { load(d); }, d / "model.safetensors", "100 MB");

  d = c.raw_model("{}      ", "", 4096);
  expect_refused([&] { load(d); }, d / "model.safetensors", "past the end");

  d = c.raw_model("{\"a\": {\"dtype\": ");
  expect_refused([&] { load(d); }, d / "model.safetensors", "not valid JSON");

  d = c.raw_model("{\"a\xff\xfe\": 1}");
  expect_refused([&] { load(d); }, d / "model.safetensors", "UTF-8");

  d = c.raw_model("{\"\xc0\xaf\": 1}");  // overlong encoding of '/'
  expect_refused([&] { load(d); }, d / "model.safetensors", "UTF-8");

  d = c.raw_model("[1, 2]");
  expect_refused([&] { load(d); }, d / "model.safetensors", "JSON object");

  d = c.raw_model("{\"__metadata__\": {\"format\": 3}}");
  expect_refused([&] { load(d); }, d / "model.safetensors", "__metadata__");
}

TEST_CASE("safetensors entries: dtype, shape, offsets, sizes, duplicates") {
  Corpus c;
  fs::path d =
      c.raw_model("{\"t\":{\"dtype\":\"F8_E4M3\",\"shape\":[4],\"data_offsets\":[0,4]}}", "abcd");
  expect_refused([&] { load(d); }, d / "model.safetensors", "unsupported dtype \"F8_E4M3\"");

  d = c.raw_model("{\"t\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", "abcd");
  expect_refused([&] { load(d); }, d / "model.safetensors", "negative");

  d = c.raw_model("{\"t\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", "abcd");
  expect_refused([&] { load(d); }, d / "model.safetensors", "non-integer");

  d = c.raw_model("{\"t\":{\"dtype\":\"F32\",\"shape\":\"4\",\"data_offsets\":[0,4]}}", "abcd");
  expect_refused([&] { load(d); }, d / "model.safetensors", "shape");

  d = c.raw_model(
      "{\"t\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,4]}}",
      "abcd");
  expect_refused([&] { load(d); }, d / "model.safetensors", "overflows");

  d = c.raw_model(
      "{\"t\":{\"dtype\":\"F32\",\"shape\":[0,18446744073709551615],\"data_offsets\":[0,0]}}");
  expect_refused([&] { load(d); }, d / "model.safetensors", "overflows");

  d = c.raw_model("{" + f32_entry("a", 2, 0, 8) + "," + f32_entry("b", 2, 4, 12) + "}",
                  std::string(12, 'x'));
  expect_refused([&] { load(d); }, d / "model.safetensors", "overlap");

  d = c.raw_model("{" + f32_entry("a", 1, 0, 4) + "," + f32_entry("b", 1, 8, 12) + "}",
                  std::string(12, 'x'));
  expect_refused([&] { load(d); }, d / "model.safetensors", "gap");

  d = c.raw_model("{" + f32_entry("a", 1, 4, 8) + "}", std::string(8, 'x'));  // gap at 0
  expect_refused([&] { load(d); }, d / "model.safetensors", "gap");

  d = c.raw_model("{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,4]}}",
                  std::string(8, 'x'));
  expect_refused([&] { load(d); }, d / "model.safetensors", "not sorted");

  d = c.raw_model("{" + f32_entry("a", 2, 0, 4) + "}", "abcd");
  expect_refused([&] { load(d); }, d / "model.safetensors", "size mismatch");

  d = c.raw_model("{" + f32_entry("a", 1, 0, 4) + "}", "abcdefgh");
  expect_refused([&] { load(d); }, d / "model.safetensors", "trailing bytes");

  d = c.raw_model("{" + f32_entry("a", 1, 0, 4) + "," + f32_entry("a", 1, 4, 8) + "}", "abcdefgh");
  expect_refused([&] { load(d); }, d / "model.safetensors", "duplicate");

  d = c.raw_model("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", "abcd");
  expect_refused([&] { load(d); }, d / "model.safetensors", "data_offsets");
}

TEST_CASE("tensors that do not match the config") {
  Corpus c;
  fs::path d = c.edited_model([](auto& enc) {
    find(enc, "model.layers.1.self_attn.k_proj.weight")->shape = {16, 8};  // transposed
  });
  expect_refused([&] { load(d); }, d / "model.safetensors",
                 "has shape [16, 8], expected [8, 16] (from num_key_value_heads");

  d = c.edited_model([](auto& enc) {
    std::erase_if(enc, [](const auto& t) { return t.name == "model.layers.1.mlp.up_proj.weight"; });
  });
  expect_refused([&] { load(d); }, d, "missing tensor \"model.layers.1.mlp.up_proj.weight\"");

  d = c.edited_model([](auto& enc) {
    std::erase_if(enc, [](const auto& t) { return t.name == "lm_head.weight"; });
  });
  expect_refused([&] { load(d); }, d, "missing tensor \"lm_head.weight\"");

  d = c.edited_model([](auto& enc) {
    auto extra = *find(enc, "model.layers.1.mlp.up_proj.weight");
    extra.name = "model.layers.2.mlp.up_proj.weight";  // a layer the config does not have
    enc.push_back(extra);
  });
  expect_refused([&] { load(d); }, d / "model.safetensors",
                 "unexpected tensor \"model.layers.2.mlp.up_proj.weight\"");

  d = c.edited_model([](auto& enc) {
    auto* t = find(enc, "model.norm.weight");
    t->dtype = DType::I32;  // same byte size, integer data
  });
  expect_refused([&] { load(d); }, d / "model.safetensors", "dtype I32");

  d = c.good_model();
  json cfg = ll::test::tiny_config_json();
  cfg["num_attention_heads"] = 3;
  ll::test::write_text(d / "config.json", cfg.dump());
  expect_refused([&] { load(d); }, d / "config.json", "not divisible by num_attention_heads");

  cfg = ll::test::tiny_config_json();
  cfg["rope_scaling"] = {{"type", "llama3"}, {"factor", 8.0}};
  ll::test::write_text(d / "config.json", cfg.dump());
  expect_refused([&] { load(d); }, d / "config.json", "needs \"original_max_position_embeddings\"");

  ll::test::write_text(d / "config.json", "{\"hidden_size\": 16");
  expect_refused([&] { load(d); }, d / "config.json", "not valid JSON");

  fs::remove(d / "config.json");
  expect_refused([&] { load(d); }, d / "config.json", "no such file");
}

TEST_CASE("NaN and Inf in weights") {
  Corpus c;
  fs::path d = c.edited_model([](auto& enc) {
    const float nan = std::nanf("");
    std::memcpy(find(enc, "model.layers.0.mlp.down_proj.weight")->bytes.data() + 40, &nan, 4);
  });
  expect_refused([&] { load(d); }, d / "model.safetensors",
                 "\"model.layers.0.mlp.down_proj.weight\" holds NaN at element 10");

  d = c.edited_model(
      [](auto& enc) {
        const uint16_t inf = 0x7f80;  // BF16 +Inf
        std::memcpy(find(enc, "model.embed_tokens.weight")->bytes.data(), &inf, 2);
      },
      DType::BF16);
  expect_refused([&] { load(d); }, d / "model.safetensors", "holds Inf");
}

TEST_CASE("sharded checkpoints: missing shard, disagreeing index, escaping shard names") {
  Corpus c;
  fs::path d = c.good_model(3);
  const fs::path shard2 = d / "model-00002-of-00003.safetensors";
  fs::remove(shard2);
  expect_refused([&] { load(d); }, d / "model.safetensors.index.json", "is missing");
  expect_refused([&] { load(d); }, shard2, "is missing");

  // A tensor present in shard 1 that the index maps to shard 2 (so it is in two shards).
  d = c.good_model(2);
  {
    const fs::path s1 = d / "model-00001-of-00002.safetensors";
    const fs::path s2 = d / "model-00002-of-00002.safetensors";
    const ll::SafetensorsFile f1 = ll::read_safetensors(s1.string());
    const ll::SafetensorsFile f2 = ll::read_safetensors(s2.string());
    std::vector<ll::SafetensorsTensor> t;
    for (const auto* f : {&f1, &f2}) {
      for (const auto& e : f->tensors) {
        if (f == &f1 || e.name == "model.norm.weight")
          t.push_back({e.name, e.dtype, e.shape, e.data});
      }
    }
    ll::write_safetensors(s1.string() + ".new", t);
    fs::rename(s1.string() + ".new", s1);
    expect_refused([&] { load(d); }, s1, "does not map to this shard");
  }

  d = c.good_model(2);
  json index = json::parse(ll::test::read_bytes(d / "model.safetensors.index.json"));
  index["weight_map"]["model.norm.weight"] = "../../etc/passwd";
  ll::test::write_text(d / "model.safetensors.index.json", index.dump());
  expect_refused([&] { load(d); }, d / "model.safetensors.index.json", "not a plain file name");

  index["weight_map"]["model.norm.weight"] = "model-00001-of-00002.safetensors";
  ll::test::write_text(d / "model.safetensors.index.json", index.dump());
  expect_refused([&] { load(d); }, d / "model-00001-of-00002.safetensors",
                 "missing tensor \"model.norm.weight\"");

  ll::test::write_text(d / "model.safetensors.index.json", "{\"weight_map\": [1]}");
  expect_refused([&] { load(d); }, d / "model.safetensors.index.json", "weight_map");

  d = c.dir.path / "empty_dir";
  fs::create_directories(d);
  ll::test::write_text(d / "config.json", ll::test::tiny_config_json().dump());
  expect_refused([&] { load(d); }, d, "no model.safetensors");
}

TEST_CASE(".bin files: magic, version, truncation, alignment, trailing bytes") {
  Corpus c;
  fs::path p = c.good_bin();
  std::string bytes = ll::test::read_bytes(p);

  const fs::path magic = c.dir.path / "magic.bin";
  ll::test::write_text(magic, "LLAMABIN" + bytes.substr(8));
  expect_refused([&] { load(magic); }, magic, "bad magic");
  expect_refused([&] { ll::open_model_bin(magic.string()); }, magic, "bad magic");

  const fs::path empty = c.dir.path / "empty.bin";
  ll::test::write_text(empty, "");
  expect_refused([&] { load(empty); }, empty, "bad magic");

  const fs::path version = c.dir.path / "version.bin";
  std::string v = bytes;
  v[8] = 7;
  ll::test::write_text(version, v);
  expect_refused([&] { load(version); }, version, "version 7 is not supported");

  const fs::path truncated = c.dir.path / "truncated.bin";
  ll::test::write_text(truncated, bytes.substr(0, bytes.size() - 100));
  expect_refused([&] { load(truncated); }, truncated, "truncated");

  const fs::path short_file = c.dir.path / "short.bin";
  ll::test::write_text(short_file, bytes.substr(0, 12));
  expect_refused([&] { load(short_file); }, short_file, "truncated");

  const fs::path header_cut = c.dir.path / "header_cut.bin";
  ll::test::write_text(header_cut, bytes.substr(0, 100));
  expect_refused([&] { load(header_cut); }, header_cut, "truncated");

  const fs::path trailing = c.dir.path / "trailing.bin";
  ll::test::write_text(trailing, bytes + std::string(4096, '\0'));
  expect_refused([&] { load(trailing); }, trailing, "trailing bytes");

  const fs::path misaligned = c.dir.path / "misaligned.bin";
  std::string m = bytes;
  const size_t at = m.find("\"offset\":4096");
  REQUIRE(at != std::string::npos);
  m.replace(at, 13, "\"offset\":4097");
  ll::test::write_text(misaligned, m);
  expect_refused([&] { load(misaligned); }, misaligned, "not aligned");

  const fs::path bad_json = c.dir.path / "bad_json.bin";
  std::string j = bytes;
  j[16] = '[';
  ll::test::write_text(bad_json, j);
  expect_refused([&] { load(bad_json); }, bad_json, "not valid JSON");

  const fs::path layers = c.dir.path / "layers.bin";
  ll::LlamaConfig one_layer = c.weights.config;
  one_layer.num_hidden_layers = 1;
  ll::write_model_bin(layers.string(), one_layer, DType::F32, ll::llama_weights_tensors(c.weights));
  expect_refused([&] { load(layers); }, layers, "unexpected tensor");

  const fs::path safetensors = c.dir.path / "model.safetensors";
  ll::test::write_raw_safetensors(safetensors, "{}", "");
  expect_refused([&] { load(safetensors); }, safetensors, "config.json");

  const fs::path nowhere = c.dir.path / "does_not_exist.bin";
  expect_refused([&] { load(nowhere); }, nowhere, "cannot open");
}
