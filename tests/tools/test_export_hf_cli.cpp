// The ./export_hf tool end to end on tests/fixtures/tiny_llama: a sharded f32 export reads
// back through our HF reader (and as --out-bin) with the logits of base + adapter unmerged and
// the logits transformers + peft compute (tests/fixtures/export_reference.safetensors, made by
// tests/reference/make_export_fixture.py), config.json carries the training's rope_scaling,
// tokenizer copied; bad inputs exit 1 with a clear message and write nothing.
#include <doctest/doctest.h>
#include <sys/wait.h>

#include <cstdlib>
#include <random>
#include <set>

#include "kernels/cpu/cpu_backend.h"
#include "model/formats/adapter_io.h"
#include "model/formats/safetensors.h"
#include "model/formats/tensor_source.h"
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

const std::string kBase = "tests/fixtures/tiny_llama";
const std::string kPeftAdapter = "tests/fixtures/tiny_llama_peft_adapter";  // no longlora.json
const std::string kOursAdapter = "tests/fixtures/ours_adapter";  // train_longlora -ctx 256

struct RunResult {
  int exit_code = -1;
  std::string out, err;
};

RunResult run_export(const TempDir& dir, const std::string& args) {
  const fs::path out = dir.path / "stdout.txt", err = dir.path / "stderr.txt";
  const std::string cmd = fmt::format("'{}/export_hf' {} >'{}' 2>'{}'", LL_BINARY_DIR, args,
                                      out.string(), err.string());
  const int status = std::system(cmd.c_str());
  RunResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = ll::test::read_bytes(out);
  r.err = ll::test::read_bytes(err);
  return r;
}

std::vector<float> logits_of(const std::string& model_path, const ll::AdapterDir* adapter,
                             const std::vector<int32_t>& tokens, double rope_scale) {
  auto files = ll::open_model_files(model_path);
  ll::CpuBackend backend;
  ll::ModelSetup setup;
  if (adapter && !adapter->lora_tensors.empty()) setup.lora = adapter->lora;
  ll::LlamaModel model(backend, ll::load_llama_weights(*files), setup);
  if (adapter) model.load_adapter(*adapter);
  ll::ForwardSpec spec;
  spec.rope = ll::linear_rope_scaling(rope_scale);
  return model.logits(tokens, spec);
}

std::vector<double> to_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }

std::vector<int32_t> random_tokens(uint64_t seed, int64_t n) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> dist(0, 511);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (int32_t& x : t) x = dist(rng);
  return t;
}

}  // namespace

TEST_CASE("export_hf: sharded f32 export equals base + adapter, config and tokenizer right") {
  REQUIRE(fs::exists(fs::path(LL_BINARY_DIR) / "export_hf"));
  TempDir dir("export_hf_good");
  const fs::path out = dir.path / "merged";
  const fs::path bin = dir.path / "bin" / "merged.bin";
  fs::create_directories(bin.parent_path());
  // tiny_llama is 640 KB in f32: 100KB shards force several files and the index.
  const RunResult r = run_export(
      dir, fmt::format("-m {} --lora {} --out '{}' --out-bin '{}' --dtype f32 --max-shard-size "
                       "100KB --rope-factor 2",
                       kBase, kPeftAdapter, out.string(), bin.string()));
  INFO("stdout: ", r.out, "\nstderr: ", r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(contains(r.out, "rope_scaling linear (factor 2)"));

  // Layout: shards + an index as transformers writes it, no single file, no debris.
  CHECK_FALSE(fs::exists(out / "model.safetensors"));
  const json index = json::parse(ll::test::read_bytes(out / "model.safetensors.index.json"));
  const json& map = index.at("weight_map");
  std::set<std::string> shards;
  uint64_t total = 0;
  for (const auto& [name, shard] : map.items()) shards.insert(shard.get<std::string>());
  CHECK(shards.size() >= 5);
  for (const std::string& s : shards) {
    CHECK(contains(s, fmt::format("-of-{:05d}.safetensors", shards.size())));
    const ll::SafetensorsFile f = ll::read_safetensors((out / s).string());
    CHECK(f.metadata.at("format") == "pt");
    uint64_t bytes = 0;
    for (const ll::TensorEntry& t : f.tensors) {
      CHECK(t.dtype == ll::DType::F32);
      CHECK(map.at(t.name) == s);
      bytes += t.nbytes;
    }
    // Within the limit, unless one tensor alone exceeds it (embed_tokens, lm_head: 131072 B).
    CHECK((bytes <= 100000 || f.tensors.size() == 1));
    total += bytes;
  }
  CHECK(index.at("metadata").at("total_size") == total);
  CHECK(map.size() == 2 + 2 * 9 + 1);  // embed, 2 layers x 9, norm, lm_head
  for (const fs::directory_entry& e : fs::directory_iterator(dir.path)) {
    CHECK_FALSE(contains(e.path().filename().string(), ".tmp."));
  }

  // config.json: the base's, with the training's linear rope_scaling; max positions unchanged.
  const json config = json::parse(ll::test::read_bytes(out / "config.json"));
  CHECK(config.at("rope_scaling") == json{{"type", "linear"}, {"factor", 2.0}});
  CHECK(config.at("max_position_embeddings") == 128);
  CHECK(config.at("torch_dtype") == "float32");
  CHECK(config.at("architectures") == json::array({"LlamaForCausalLM"}));
  CHECK(ll::test::read_bytes(out / "tokenizer.model") ==
        ll::test::read_bytes(source_path(kBase + "/tokenizer.model")));

  // Our reader loads the sharded directory and the .bin; both run at the config's factor 2
  // and equal the unmerged base + adapter at factor 2 (200 tokens: past the base's 128).
  auto files = ll::open_model_files(out.string());
  CHECK(files->config.rope_scaling == ll::linear_rope_scaling(2.0));
  CHECK(files->tokenizer_path == (out / "tokenizer.model").string());
  auto bin_files = ll::open_model_files(bin.string());
  CHECK(bin_files->config.rope_scaling == ll::linear_rope_scaling(2.0));
  CHECK(fs::exists(bin.parent_path() / "tokenizer.model"));
  const ll::AdapterDir adapter = ll::read_adapter_dir(source_path(kPeftAdapter));
  for (uint64_t seed : ll::test::test_seeds()) {
    const std::vector<int32_t> tokens = random_tokens(seed, 200);
    const std::vector<float> ref = logits_of(source_path(kBase), &adapter, tokens, 2.0);
    for (const fs::path& merged : {out, bin}) {
      CAPTURE(merged.string());
      ll::test::check_close(logits_of(merged.string(), nullptr, tokens, 2.0), to_double(ref), 2e-5,
                            1e-5, 1e-5);
    }
  }

  // Exporting again over a previous export replaces it (by default in the base's dtype, F32
  // here: an F32 base exported as BF16 would change its perplexity; one file).
  const RunResult again = run_export(dir, fmt::format("-m {} --lora {} --out '{}' --rope-factor 2",
                                                      kBase, kPeftAdapter, out.string()));
  INFO("stderr: ", again.err);
  REQUIRE(again.exit_code == 0);
  CHECK_FALSE(fs::exists(out / "model.safetensors.index.json"));
  const ll::SafetensorsFile single = ll::read_safetensors((out / "model.safetensors").string());
  CHECK(single.tensors.at(0).dtype == ll::DType::F32);
  CHECK(json::parse(ll::test::read_bytes(out / "config.json")).at("torch_dtype") == "float32");
  // --dtype still overrides.
  const RunResult bf16 =
      run_export(dir, fmt::format("-m {} --lora {} --out '{}' --rope-factor 2 --dtype bf16", kBase,
                                  kPeftAdapter, out.string()));
  REQUIRE(bf16.exit_code == 0);
  CHECK(ll::read_safetensors((out / "model.safetensors").string()).tensors.at(0).dtype ==
        ll::DType::BF16);
  CHECK(json::parse(ll::test::read_bytes(out / "config.json")).at("torch_dtype") == "bfloat16");
}

TEST_CASE("export_hf: the factor comes from longlora.json; logits match transformers + peft") {
  REQUIRE(fs::exists(fs::path(LL_BINARY_DIR) / "export_hf"));
  TempDir dir("export_hf_reference");
  const ll::SafetensorsFile ref =
      ll::read_safetensors(source_path("tests/fixtures/export_reference.safetensors"));
  const std::vector<int32_t> tokens = ref.read_i32("tokens");
  const std::vector<int32_t> positions = ref.read_i32("positions");  // the stored logit rows
  auto rows = [&](const std::vector<float>& logits) {
    std::vector<float> out;
    for (int32_t p : positions) {
      out.insert(out.end(), logits.begin() + p * 512, logits.begin() + (p + 1) * 512);
    }
    return out;
  };
  struct Case {
    std::string name;
    std::string adapter;
    std::string extra_args;
  };
  const Case cases[] = {{"peft", kPeftAdapter, "--rope-factor 2"}, {"ours", kOursAdapter, ""}};
  for (const Case& c : cases) {
    CAPTURE(c.name);
    const double factor = ref.read_f32(fmt::format("{}.factor", c.name)).at(0);
    const std::vector<float> expected = ref.read_f32(fmt::format("{}.logits", c.name));
    const fs::path out = dir.path / c.name;
    const RunResult r = run_export(dir, fmt::format("-m {} --lora {} --out '{}' --dtype f32 {}",
                                                    kBase, c.adapter, out.string(), c.extra_args));
    INFO("stderr: ", r.err);
    REQUIRE(r.exit_code == 0);
    const json config = json::parse(ll::test::read_bytes(out / "config.json"));
    CHECK(config.at("rope_scaling").at("factor") == factor);
    // Exported (merged) and our unmerged base + adapter both give transformers + peft's logits.
    const ll::AdapterDir adapter = ll::read_adapter_dir(source_path(c.adapter));
    const std::vector<float> unmerged = logits_of(source_path(kBase), &adapter, tokens, factor);
    ll::test::check_close(rows(unmerged), to_double(expected), 1e-4, 1e-4, 1e-4);
    ll::test::check_close(rows(logits_of(out.string(), nullptr, tokens, factor)),
                          to_double(expected), 1e-4, 1e-4, 1e-4);
  }
  // Our adapter records the run: train_longlora -ctx 256 on a 128-position model.
  const ll::AdapterDir ours = ll::read_adapter_dir(source_path(kOursAdapter));
  REQUIRE(ours.longlora.has_value());
  CHECK(ours.longlora->rope == ll::linear_rope_scaling(2.0));
  CHECK(ours.longlora->context_length == 256);
}

TEST_CASE("export_hf writes the recorded yarn and llama3 scalings as config.json rope_scaling") {
  REQUIRE(fs::exists(fs::path(LL_BINARY_DIR) / "export_hf"));
  TempDir dir("export_hf_rope_types");
  ll::RopeScaling yarn;
  yarn.type = ll::RopeType::Yarn;
  yarn.factor = 4.0;
  yarn.original_max_position_embeddings = 128;
  yarn.beta_fast = 16.0;
  ll::RopeScaling llama3;
  llama3.type = ll::RopeType::Llama3;
  llama3.factor = 2.5;
  llama3.original_max_position_embeddings = 64;
  for (const ll::RopeScaling& rope : {yarn, llama3}) {
    CAPTURE(ll::describe_rope_scaling(rope));
    ll::AdapterDir adapter = ll::read_adapter_dir(source_path(kOursAdapter));
    adapter.longlora->rope = rope;
    const fs::path lora = dir.path / "lora", out = dir.path / "out";
    fs::remove_all(out);
    ll::write_adapter_dir(lora.string(), adapter);
    const RunResult r = run_export(dir, fmt::format("-m {} --lora '{}' --out '{}' --dtype f32",
                                                    kBase, lora.string(), out.string()));
    INFO("stderr: ", r.err);
    REQUIRE(r.exit_code == 0);
    CHECK(contains(r.out, "rope_scaling " + ll::describe_rope_scaling(rope)));
    const json config = json::parse(ll::test::read_bytes(out / "config.json"));
    CHECK(config.at("rope_scaling") == ll::rope_scaling_to_json(rope));
    CHECK(ll::open_model_files(out.string())->config.rope_scaling == rope);
  }
}

TEST_CASE("export_hf: bad inputs exit 1 with a clear message and write nothing") {
  REQUIRE(fs::exists(fs::path(LL_BINARY_DIR) / "export_hf"));
  TempDir dir("export_hf_bad");
  const fs::path out = dir.path / "out";
  const fs::path bin = dir.path / "out.bin";
  // The base model without its tokenizer.
  const fs::path no_tok = dir.path / "no_tokenizer";
  fs::create_directories(no_tok);
  for (const char* f : {"config.json", "model.safetensors"}) {
    fs::copy_file(source_path(kBase) + "/" + f, no_tok / f);
  }
  // A directory that is not a previous export.
  const fs::path foreign = dir.path / "foreign";
  fs::create_directories(foreign);
  ll::test::write_text(foreign / "notes.txt", "mine");

  struct Case {
    std::string args;
    std::vector<std::string> message;
  };
  const std::string peft = "--lora " + kPeftAdapter;
  const Case cases[] = {
      {fmt::format("-m tests/fixtures/tiny_llama_rope2 {} --rope-factor 2 --tokenizer {}/"
                   "tokenizer.model --out '{}' --out-bin '{}'",
                   peft, kBase, out.string(), bin.string()),
       {"cannot merge tests/fixtures/tiny_llama_peft_adapter into tests/fixtures/tiny_llama_rope2",
        "adapter for another base model?", "model.layers.1."}},
      {fmt::format("-m '{}' {} --rope-factor 2 --out '{}'", no_tok.string(), peft, out.string()),
       {"no tokenizer.json or tokenizer.model", "--tokenizer"}},
      {fmt::format("-m {} {} --rope-factor 2 --tokenizer '{}' --out '{}'", kBase, peft,
                   (dir.path / "none.model").string(), out.string()),
       {"missing tokenizer", "none.model"}},
      {fmt::format("-m {} {} --out '{}'", kBase, peft, out.string()),
       {"no longlora.json", "--rope-factor"}},
      {fmt::format("-m {} {} --rope-factor 0.5 --out '{}'", kBase, peft, out.string()),
       {"--rope-factor 0.5", ">= 1"}},
      {fmt::format("-m {} {} --rope-factor 2 --out '{}' --max-shard-size 5XB", kBase, peft,
                   out.string()),
       {"5XB", "not understood"}},
      {fmt::format("-m {} {} --rope-factor 2 --out '{}' --dtype f16", kBase,
                   "--lora tests/fixtures/tiny_llama", out.string()),
       {"tests/fixtures/tiny_llama/adapter_config.json", "missing"}},
      {fmt::format("-m {} {} --rope-factor 2", kBase, peft), {"nothing to write"}},
      {fmt::format("-m '{}' {} --rope-factor 2 --tokenizer {}/tokenizer.model --out '{}/'",
                   no_tok.string(), peft, kBase, no_tok.string()),
       {"is the input", "somewhere new"}},
  };
  for (const Case& c : cases) {
    const RunResult r = run_export(dir, c.args);
    INFO("args: ", c.args, "\nstderr: ", r.err);
    CHECK(r.exit_code == 1);
    CHECK(contains(r.err, "export_hf: error: "));
    for (const std::string& m : c.message) CHECK(contains(r.err, m));
    CHECK_FALSE(fs::exists(out));
    CHECK_FALSE(fs::exists(bin));
    CHECK(fs::exists(no_tok / "model.safetensors"));  // the input is never replaced
  }
  const RunResult r = run_export(
      dir, fmt::format("-m {} {} --rope-factor 2 --out '{}'", kBase, peft, foreign.string()));
  CHECK(r.exit_code == 1);
  CHECK(contains(r.err, "notes.txt"));
  CHECK(ll::test::read_bytes(foreign / "notes.txt") == "mine");
  CHECK(run_export(dir, "").exit_code == 2);  // usage

  // Only a .bin: no tokenizer needed (none to copy).
  const RunResult bin_only = run_export(dir, fmt::format("-m '{}' {} --rope-factor 2 --out-bin "
                                                         "'{}'",
                                                         no_tok.string(), peft, bin.string()));
  INFO("stderr: ", bin_only.err);
  CHECK(bin_only.exit_code == 0);
  CHECK(ll::open_model_files(bin.string())->config.rope_scaling == ll::linear_rope_scaling(2.0));
}
