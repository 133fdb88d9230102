// Hugging Face directories: one model.safetensors, or shards behind an index; both load to
// the same weights, bit for bit, as the ones written.
#include <doctest/doctest.h>

#include <cmath>
#include <set>

#include "model/formats/hf_checkpoint.h"
#include "model/formats/tensor_source.h"
#include "model/llama_weights.h"
#include "tests/model/model_fixtures.h"

using ll::DType;
using ll::test::TempDir;

TEST_CASE("single-file directory: config, tensors, tokenizer, exact F32 weights") {
  TempDir dir("hf_single");
  const ll::LlamaWeights w = ll::random_llama_weights(ll::test::tiny_config(), 7);
  ll::test::write_hf_model(dir.path, w, DType::F32);
  auto files = ll::open_model_files(dir.path.string());
  CHECK(files->path == dir.path.string());
  CHECK(files->config.hidden_size == 16);
  CHECK(files->config.rms_norm_eps == 1e-5);
  CHECK(files->tokenizer_path.empty());
  CHECK(files->tensors.entries().size() == 2 + 2 * 9 + 1);
  CHECK(ll::test::weights_equal(ll::load_llama_weights(*files), w));

  ll::test::write_text(dir.path / "tokenizer.model", "not really a tokenizer");
  CHECK(ll::open_hf_checkpoint(dir.path.string())->tokenizer_path ==
        (dir.path / "tokenizer.model").string());
}

TEST_CASE("sharded directory with an index loads the same weights") {
  TempDir dir("hf_sharded");
  const ll::LlamaWeights w = ll::random_llama_weights(ll::test::tiny_config(), 8);
  ll::test::write_hf_model(dir.path, w, DType::F32, 3);
  CHECK(!std::filesystem::exists(dir.path / "model.safetensors"));
  auto files = ll::open_model_files(dir.path.string());
  std::set<std::string> shard_files;
  for (const auto& [name, t] : files->tensors.entries()) shard_files.insert(t.file);
  CHECK(shard_files.size() == 3);
  CHECK(ll::test::weights_equal(ll::load_llama_weights(*files), w));
}

TEST_CASE("tied embeddings: lm_head may be absent and becomes a copy of embed_tokens") {
  TempDir dir("hf_tied");
  ll::LlamaConfig c = ll::test::tiny_config();
  c.tie_word_embeddings = true;
  const ll::LlamaWeights w = ll::random_llama_weights(c, 9);
  CHECK(w.lm_head == w.embed_tokens);
  ll::test::write_hf_model(dir.path, w, DType::F32);
  auto files = ll::open_model_files(dir.path.string());
  CHECK(files->tensors.find("lm_head.weight") == nullptr);
  const ll::LlamaWeights loaded = ll::load_llama_weights(*files);
  CHECK(loaded.config.tie_word_embeddings);
  CHECK(ll::test::weights_equal(loaded, w));
}

TEST_CASE("rotary_emb.inv_freq buffers of old checkpoints are ignored") {
  TempDir dir("hf_inv_freq");
  const ll::LlamaWeights w = ll::random_llama_weights(ll::test::tiny_config(), 10);
  std::vector<ll::test::EncodedTensor> enc;
  for (const ll::TensorEntry& t : ll::llama_weights_tensors(w))
    enc.push_back(ll::test::encode(t, DType::F32));
  const std::vector<float> inv_freq(2, 0.5f);
  enc.push_back({"model.layers.0.self_attn.rotary_emb.inv_freq",
                 DType::F32,
                 {2},
                 std::vector<uint8_t>(reinterpret_cast<const uint8_t*>(inv_freq.data()),
                                      reinterpret_cast<const uint8_t*>(inv_freq.data()) + 8)});
  ll::test::write_text(dir.path / "config.json", ll::llama_config_to_json(w.config).dump());
  ll::write_safetensors((dir.path / "model.safetensors").string(), ll::test::views(enc));
  CHECK(
      ll::test::weights_equal(ll::load_llama_weights(*ll::open_model_files(dir.path.string())), w));
}

TEST_CASE("specs follow the config: GQA shapes and HF order") {
  const auto specs = ll::llama_tensor_specs(ll::test::tiny_config());
  REQUIRE(specs.size() == 21);
  CHECK(specs.front().name == "model.embed_tokens.weight");
  CHECK(specs.front().shape == std::vector<int64_t>{32, 16});
  CHECK(specs[2].name == "model.layers.0.self_attn.k_proj.weight");
  CHECK(specs[2].shape == std::vector<int64_t>{8, 16});   // 2 kv heads x head_dim 4
  CHECK(specs[7].shape == std::vector<int64_t>{16, 40});  // down_proj [D, F]
  CHECK(specs.back().name == "lm_head.weight");
  CHECK(!specs.back().optional);
}

TEST_CASE("random weights are deterministic in the seed, norms are one") {
  const ll::LlamaConfig c = ll::test::tiny_config();
  const ll::LlamaWeights a = ll::random_llama_weights(c, 42), b = ll::random_llama_weights(c, 42);
  const ll::LlamaWeights other = ll::random_llama_weights(c, 43);
  CHECK(ll::test::weights_equal(a, b));
  CHECK(!ll::test::weights_equal(a, other));
  for (float v : a.layers[1].post_attention_layernorm) CHECK(v == 1.0f);
  for (float v : a.norm) CHECK(v == 1.0f);
  double sum2 = 0;
  for (float v : a.layers[0].gate_proj) sum2 += double(v) * v;
  const double rms = std::sqrt(sum2 / double(a.layers[0].gate_proj.size()));
  CHECK(rms > 0.015);
  CHECK(rms < 0.025);
}
