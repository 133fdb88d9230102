// config.json of the newer families: what each one's fields become in LlamaConfig (the bundled
// configs of models/configs as their publishers ship them), what is refused and how, and the
// round trip through llama_config_to_json (what .bin headers and export_hf write).
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "model/llama_config.h"
#include "tests/model/config_test_util.h"
#include "tests/model/model_fixtures.h"
#include "tests/test_paths.h"

using ll::test::check_rejected;
using ll::test::parse_error;
using ll::test::tiny_config_json;
using nlohmann::json;

namespace {

ll::LlamaConfig bundled(const std::string& name) {
  return ll::llama_config_from_file(
      ll::test::source_path("models/configs/" + name + "/config.json"));
}

json tiny_of(const char* model_type) {
  json doc = tiny_config_json();
  doc["model_type"] = model_type;
  return doc;
}

}  // namespace

TEST_CASE("Llama-3.1-8B: GQA, explicit eos list, 128256 vocabulary") {
  const ll::LlamaConfig c = bundled("llama-3.1-8b");
  CHECK(c.family == ll::ModelFamily::Llama);
  CHECK(c.num_key_value_heads == 8);
  CHECK(c.head_dim() == 128);
  CHECK(c.vocab_size == 128256);
  CHECK(c.bos_token_id == 128000);
  CHECK(c.eos_token_id == 128001);
  CHECK(c.eos_token_ids == std::vector<int64_t>{128001, 128008, 128009});
  CHECK(c.rope_theta == 500000.0);
  CHECK(!c.qkv_bias);
  CHECK(!c.o_bias);
}

TEST_CASE("Qwen2.5-7B: q/k/v bias without a flag, the window switched off") {
  const ll::LlamaConfig c = bundled("qwen2.5-7b");
  CHECK(c.family == ll::ModelFamily::Qwen2);
  CHECK(c.qkv_bias);
  CHECK(!c.o_bias);
  CHECK(c.sliding_window == 0);  // use_sliding_window false: sliding_window is ignored
  CHECK(c.head_dim() == 128);
  CHECK(c.kv_dim() == 512);
  CHECK(c.vocab_size == 152064);
  CHECK(c.rope_theta == 1e6);
}

TEST_CASE("Mistral-7B-v0.3: sliding_window null is plain causal attention") {
  const ll::LlamaConfig c = bundled("mistral-7b-v0.3");
  CHECK(c.family == ll::ModelFamily::Mistral);
  CHECK(c.sliding_window == 0);
  CHECK(!c.qkv_bias);
  CHECK_NOTHROW(ll::check_sliding_window(c, 1 << 20, "-ctx 1048576"));
}

TEST_CASE("Mistral v0.1's window and Mistral-Nemo's head_dim") {
  json v01 = tiny_of("mistral");
  v01["sliding_window"] = 4096;
  const ll::LlamaConfig c = ll::llama_config_from_json(v01, "v0.1");
  CHECK(c.sliding_window == 4096);
  CHECK_NOTHROW(ll::check_sliding_window(c, 4096, "-ctx 4096"));
  CHECK_THROWS_WITH_AS(ll::check_sliding_window(c, 4097, "-ctx 4097"),
                       doctest::Contains("-ctx 4097 covers 4097 positions, more than the model's "
                                         "sliding_window = 4096"),
                       ll::Error);

  // Nemo: 5120 hidden, 32 heads, head_dim 128 (not 160): q_proj is [4096, 5120].
  json nemo = tiny_of("mistral");
  nemo["hidden_size"] = 20;
  nemo["num_attention_heads"] = 4;
  nemo["num_key_value_heads"] = 2;
  nemo["head_dim"] = 4;
  const ll::LlamaConfig n = ll::llama_config_from_json(nemo, "nemo");
  CHECK(n.head_dim() == 4);
  CHECK(n.q_dim() == 16);
  CHECK(n.kv_dim() == 8);
  // Without head_dim the heads must divide hidden_size.
  nemo.erase("head_dim");
  nemo["hidden_size"] = 18;
  check_rejected(nemo, "not divisible");
}

TEST_CASE("Llama's attention_bias biases all four projections") {
  json doc = tiny_config_json();
  doc["attention_bias"] = true;
  const ll::LlamaConfig c = ll::llama_config_from_json(doc, "x");
  CHECK(c.qkv_bias);
  CHECK(c.o_bias);
}

TEST_CASE("what the families cannot run is refused, naming the field") {
  check_rejected(tiny_of("gemma"), "model_type \"gemma\" is not supported");
  check_rejected(tiny_of("qwen2_moe"), "model_type");
  json mt = tiny_config_json();
  mt["model_type"] = 3;
  check_rejected(mt, "model_type");
  json swa = tiny_of("qwen2");
  swa["use_sliding_window"] = true;
  check_rejected(swa, "use_sliding_window");
  swa["use_sliding_window"] = "no";
  check_rejected(swa, "use_sliding_window");
  json mlp = tiny_of("qwen2");
  mlp["mlp_bias"] = true;
  check_rejected(mlp, "mlp_bias");
  json mb = tiny_of("mistral");
  mb["attention_bias"] = true;
  check_rejected(mb, "attention_bias");
  json win = tiny_of("mistral");
  win["sliding_window"] = -5;
  check_rejected(win, "sliding_window");
  win["sliding_window"] = "4096";
  check_rejected(win, "sliding_window");
  json eos = tiny_config_json();
  eos["eos_token_id"] = json::array({2, 99});  // 99 is outside the vocabulary of 32
  check_rejected(eos, "eos_token_id");
  eos["eos_token_id"] = json::array({2, "3"});
  check_rejected(eos, "eos_token_id");
}

TEST_CASE("each family's config survives llama_config_to_json and back") {
  for (const char* name : {"llama-3.1-8b", "qwen2.5-7b", "mistral-7b-v0.3"}) {
    CAPTURE(name);
    const ll::LlamaConfig c = bundled(name);
    const json doc = ll::llama_config_to_json(c);
    CHECK(doc.at("model_type") == ll::model_type_name(c.family));
    CHECK(doc.at("architectures") == json::array({ll::causal_lm_architecture(c.family)}));
    const ll::LlamaConfig back = ll::llama_config_from_json(doc, "back");
    CHECK(back.family == c.family);
    CHECK(back.head_dim() == c.head_dim());
    CHECK(back.qkv_bias == c.qkv_bias);
    CHECK(back.o_bias == c.o_bias);
    CHECK(back.sliding_window == c.sliding_window);
    CHECK(back.eos_token_ids == c.eos_token_ids);
    CHECK(back.tie_word_embeddings == c.tie_word_embeddings);
    CHECK(back.vocab_size == c.vocab_size);
  }
  json nemo = tiny_of("mistral");
  nemo["head_dim"] = 8;
  nemo["sliding_window"] = 16;
  const ll::LlamaConfig c = ll::llama_config_from_json(nemo, "nemo");
  const json doc = ll::llama_config_to_json(c);
  CHECK(doc.at("head_dim") == 8);
  CHECK(doc.at("sliding_window") == 16);
  CHECK(ll::llama_config_from_json(doc, "back").q_dim() == 32);
}
