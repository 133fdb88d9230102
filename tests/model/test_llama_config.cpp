// config.json parsing: HF defaults, the accepted variants, and one rejection per bad field,
// each message naming the file and the field.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "model/llama_config.h"
#include "tests/model/config_test_util.h"
#include "tests/model/model_fixtures.h"

using ll::test::check_rejected;
using ll::test::parse_error;
using ll::test::tiny_config_json;
using nlohmann::json;

namespace {}  // namespace

TEST_CASE("a Llama-2 7B config parses with its values") {
  json doc = {{"architectures", {"LlamaForCausalLM"}},
              {"hidden_size", 4096},
              {"intermediate_size", 11008},
              {"num_hidden_layers", 32},
              {"num_attention_heads", 32},
              {"max_position_embeddings", 4096},
              {"rms_norm_eps", 1e-5},
              {"vocab_size", 32000},
              {"bos_token_id", 1},
              {"eos_token_id", 2},
              {"rope_scaling", nullptr},
              {"tie_word_embeddings", false}};
  const ll::LlamaConfig c = ll::llama_config_from_json(doc, "7b");
  CHECK(c.hidden_size == 4096);
  CHECK(c.intermediate_size == 11008);
  CHECK(c.num_hidden_layers == 32);
  CHECK(c.num_key_value_heads == 32);  // defaults to the head count
  CHECK(c.head_dim() == 128);
  CHECK(c.rms_norm_eps == 1e-5);
  CHECK(c.rope_theta == 10000.0);
  CHECK(c.rope_scaling == ll::linear_rope_scaling(1.0));
  CHECK(c.vocab_size == 32000);
  CHECK(!c.tie_word_embeddings);
}

TEST_CASE("defaults, GQA, linear rope_scaling and eos lists") {
  json doc = tiny_config_json();
  doc.erase("rms_norm_eps");
  doc.erase("rope_theta");
  doc.erase("tie_word_embeddings");
  doc["eos_token_id"] = {2, 3};
  doc["rope_scaling"] = {{"rope_type", "linear"}, {"factor", 4.0}};
  ll::LlamaConfig c = ll::llama_config_from_json(doc, "x");
  CHECK(c.rms_norm_eps == 1e-6);
  CHECK(c.rope_theta == 10000.0);
  CHECK(c.rope_scaling == ll::linear_rope_scaling(4.0));
  CHECK(c.num_key_value_heads == 2);
  CHECK(c.kv_dim() == 8);
  CHECK(c.eos_token_id == 2);
  CHECK(!c.tie_word_embeddings);
  doc["rope_scaling"] = {{"type", "linear"}, {"factor", 2}};
  CHECK(ll::llama_config_from_json(doc, "x").rope_scaling == ll::linear_rope_scaling(2.0));
}

TEST_CASE("transformers 5's rope_parameters") {
  json doc = tiny_config_json();
  doc.erase("rope_theta");
  doc.erase("rope_scaling");
  doc["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 500000.0}};
  ll::LlamaConfig c = ll::llama_config_from_json(doc, "x");
  CHECK(c.rope_theta == 500000.0);
  CHECK(c.rope_scaling == ll::linear_rope_scaling(1.0));
  doc["rope_parameters"] = {{"rope_type", "linear"}, {"factor", 8.0}, {"rope_theta", 10000.0}};
  c = ll::llama_config_from_json(doc, "x");
  CHECK(c.rope_scaling == ll::linear_rope_scaling(8.0));
  CHECK(c.rope_theta == 10000.0);
  // Both spellings present: they must agree.
  doc["rope_scaling"] = {{"type", "linear"}, {"factor", 8.0}};
  CHECK(ll::llama_config_from_json(doc, "x").rope_scaling == ll::linear_rope_scaling(8.0));
  doc["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  check_rejected(doc, "disagree");
  doc.erase("rope_scaling");
  doc["rope_theta"] = 20000.0;
  check_rejected(doc, "rope_theta");
  doc.erase("rope_theta");
  doc["rope_parameters"] = {{"rope_type", "longrope"}, {"factor", 8.0}};
  check_rejected(doc, "\"longrope\" is not supported");
}

TEST_CASE("rope scalings of today's models: Llama-3.1's llama3, Qwen2.5's yarn, dynamic") {
  json doc = tiny_config_json();
  doc["max_position_embeddings"] = 131072;
  doc["rope_theta"] = 500000.0;
  doc["rope_scaling"] = {{"factor", 8.0},
                         {"low_freq_factor", 1.0},
                         {"high_freq_factor", 4.0},
                         {"original_max_position_embeddings", 8192},
                         {"rope_type", "llama3"}};
  ll::LlamaConfig c = ll::llama_config_from_json(doc, "x");
  CHECK(c.rope_scaling.type == ll::RopeType::Llama3);
  CHECK(c.rope_scaling.factor == 8.0);
  CHECK(c.rope_scaling.original_max_position_embeddings == 8192);
  CHECK(ll::llama_config_from_json(ll::llama_config_to_json(c), "y").rope_scaling ==
        c.rope_scaling);
  // Qwen2.5's documented yarn block, with the old "type" key; max positions 32768.
  doc["max_position_embeddings"] = 32768;
  doc["rope_theta"] = 1000000.0;
  doc["rope_scaling"] = {
      {"factor", 4.0}, {"original_max_position_embeddings", 32768}, {"type", "yarn"}};
  c = ll::llama_config_from_json(doc, "x");
  CHECK(c.rope_scaling.type == ll::RopeType::Yarn);
  CHECK(!c.rope_scaling.attention_factor);
  CHECK(ll::llama_config_from_json(ll::llama_config_to_json(c), "y").rope_scaling ==
        c.rope_scaling);
  // yarn without original_max_position_embeddings: transformers' default, max_position_embeddings.
  doc["rope_scaling"] = {{"type", "yarn"}, {"factor", 2.0}};
  CHECK(ll::llama_config_from_json(doc, "x").rope_scaling.original_max_position_embeddings ==
        32768);
  doc["rope_scaling"] = {{"type", "dynamic"}, {"factor", 2.0}};
  CHECK(ll::llama_config_from_json(doc, "x").rope_scaling.type == ll::RopeType::Dynamic);
}

TEST_CASE("hostile rope_scaling values are rejected naming the file and the field") {
  const json llama3 = {{"rope_type", "llama3"},
                       {"factor", 8.0},
                       {"low_freq_factor", 1.0},
                       {"high_freq_factor", 4.0},
                       {"original_max_position_embeddings", 8192}};
  auto with_rope = [](json rope) {
    json doc = tiny_config_json();
    doc["rope_scaling"] = std::move(rope);
    return doc;
  };
  auto changed = [&](const char* key, json value) {
    json r = llama3;
    if (value.is_null())
      r.erase(key);
    else
      r[key] = std::move(value);
    return with_rope(r);
  };
  check_rejected(with_rope("linear"), "must be null or an object");
  check_rejected(with_rope({{"type", "unknown"}, {"factor", 2.0}}), "\"unknown\" is not supported");
  check_rejected(with_rope({{"type", "linear"}, {"factor", true}}), "\"factor\" must be a number");
  check_rejected(with_rope({{"type", "linear"}, {"factor", 0.5}}), "\"factor\" = 0.5");
  check_rejected(changed("factor", "8"), "\"factor\" must be a number");
  check_rejected(changed("low_freq_factor", 4.0), "high_freq_factor");
  check_rejected(changed("high_freq_factor", 0.5), "high_freq_factor");
  check_rejected(changed("original_max_position_embeddings", nullptr),
                 "needs \"original_max_position_embeddings\"");
  check_rejected(changed("original_max_position_embeddings", "8192"),
                 "\"original_max_position_embeddings\" must be an integer");
  check_rejected(changed("original_max_position_embeddings", 0),
                 "\"original_max_position_embeddings\" must be an integer");
  check_rejected(with_rope({{"type", "yarn"}, {"factor", 4.0}, {"truncate", "yes"}}), "truncate");
  check_rejected(with_rope({{"type", "yarn"}, {"factor", 4.0}, {"attention_factor", 0.0}}),
                 "attention_factor");
  check_rejected(with_rope({{"type", "yarn"}, {"factor", 4.0}, {"beta_fast", 1}, {"beta_slow", 4}}),
                 "beta_fast");
}

TEST_CASE("to_json round trips and carries the HF identity keys") {
  json doc = tiny_config_json();
  doc["rope_scaling"] = {{"type", "linear"}, {"factor", 8.0}};
  doc["tie_word_embeddings"] = true;
  const ll::LlamaConfig c = ll::llama_config_from_json(doc, "x");
  const json out = ll::llama_config_to_json(c);
  CHECK(out["architectures"][0] == "LlamaForCausalLM");
  CHECK(out["model_type"] == "llama");
  CHECK(out["rope_scaling"]["type"] == "linear");
  const ll::LlamaConfig back = ll::llama_config_from_json(out, "y");
  CHECK(back.hidden_size == c.hidden_size);
  CHECK(back.num_key_value_heads == c.num_key_value_heads);
  CHECK(back.rope_scaling == ll::linear_rope_scaling(8.0));
  CHECK(back.tie_word_embeddings);
  CHECK(back.rms_norm_eps == c.rms_norm_eps);
  CHECK(ll::llama_config_to_json(back) == out);
}

TEST_CASE("each bad field is rejected naming the file and the field") {
  auto with = [](const char* key, json value) {
    json doc = tiny_config_json();
    doc[key] = std::move(value);
    return doc;
  };
  auto without = [](const char* key) {
    json doc = tiny_config_json();
    doc.erase(key);
    return doc;
  };
  check_rejected(json::array(), "JSON object");
  for (const char* key : {"hidden_size", "intermediate_size", "num_hidden_layers",
                          "num_attention_heads", "vocab_size", "max_position_embeddings"}) {
    CAPTURE(key);
    check_rejected(without(key), key);
    check_rejected(with(key, 0), key);
    check_rejected(with(key, -4), key);
    check_rejected(with(key, 16.5), key);
    check_rejected(with(key, "16"), key);
  }
  check_rejected(with("num_key_value_heads", 0), "num_key_value_heads");
  check_rejected(with("hidden_size", 18), "not divisible by num_attention_heads");
  check_rejected(with("num_key_value_heads", 3), "not divisible by num_key_value_heads");
  json odd = tiny_config_json();  // head_dim 3
  odd["hidden_size"] = 12;
  check_rejected(odd, "head_dim");
  check_rejected(with("hidden_size", int64_t(1) << 40), "implausibly large");
  check_rejected(with("rms_norm_eps", 0), "rms_norm_eps");
  check_rejected(with("rms_norm_eps", -1e-5), "rms_norm_eps");
  check_rejected(with("rms_norm_eps", "small"), "rms_norm_eps");
  check_rejected(with("rope_theta", -1), "rope_theta");
  check_rejected(with("rope_scaling", {{"type", "longrope"}, {"factor", 2.0}}), "longrope");
  check_rejected(with("rope_scaling", {{"type", "yarn"}, {"factor", "2"}}), "factor");
  check_rejected(with("rope_scaling", {{"factor", 2.0}}), "rope_scaling");
  check_rejected(with("rope_scaling", {{"type", "linear"}, {"factor", 0.5}}), "factor");
  check_rejected(with("rope_scaling", {{"type", "linear"}}), "factor");
  check_rejected(with("rope_scaling", 3), "rope_scaling");
  check_rejected(with("tie_word_embeddings", "yes"), "tie_word_embeddings");
  check_rejected(with("eos_token_id", json::array()), "eos_token_id");
  check_rejected(with("eos_token_id", 99), "eos_token_id");
  check_rejected(with("bos_token_id", -1), "bos_token_id");
  check_rejected(with("hidden_act", "gelu"), "hidden_act");
  check_rejected(with("head_dim", 3), "head_dim");  // odd: RoPE pairs
  check_rejected(with("head_dim", 0), "head_dim");
  check_rejected(with("head_dim", -2), "head_dim");
  check_rejected(with("attention_bias", "yes"), "attention_bias");
  check_rejected(with("mlp_bias", true), "mlp_bias");
  CHECK(parse_error(with("head_dim", 4)).empty());
  CHECK(parse_error(with("attention_bias", false)).empty());
}

TEST_CASE("config files: missing, invalid JSON, and good") {
  ll::test::TempDir dir("config_file");
  const std::string missing = dir.file("nope.json");
  CHECK_THROWS_WITH_AS(ll::llama_config_from_file(missing), doctest::Contains(missing.c_str()),
                       ll::Error);
  const std::string bad = dir.file("bad.json");
  ll::test::write_text(bad, "{\"hidden_size\": 16,");
  CHECK_THROWS_WITH_AS(ll::llama_config_from_file(bad), doctest::Contains("not valid JSON"),
                       ll::Error);
  const std::string good = dir.file("config.json");
  ll::test::write_text(good, tiny_config_json().dump());
  CHECK(ll::llama_config_from_file(good).hidden_size == 16);
}
