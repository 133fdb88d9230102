// Hostile tokenizer.json files under AddressSanitizer/UBSan: each damaged field gets an
// ll::Error naming it, and random truncation and byte damage of a real fixture either loads or
// throws ll::Error (never a crash or another exception).
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>
#include <random>

#include "data/hf_tokenizer.h"
#include "data/tokenizer.h"
#include "data/tokenizer_json.h"
#include "tests/data/tokenizer_json_fixture.h"

using json = nlohmann::json;
using ll::test::contains;
using ll::test::error_of;

namespace {

// A small valid byte-level tokenizer: "a", "b", "ab" with one merge, one special token.
json minimal() {
  return json::parse(R"({
    "version": "1.0", "truncation": null, "padding": null,
    "added_tokens": [{"id": 3, "content": "<|end|>", "single_word": false, "lstrip": false,
                      "rstrip": false, "normalized": false, "special": true}],
    "normalizer": null,
    "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
      {"type": "Split", "pattern": {"Regex": "\\p{L}+|\\s+"}, "behavior": "Isolated",
       "invert": false},
      {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
       "use_regex": false}]},
    "post_processor": null,
    "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true,
                "use_regex": true},
    "model": {"type": "BPE", "dropout": null, "unk_token": null,
              "continuing_subword_prefix": null, "end_of_word_suffix": null, "fuse_unk": false,
              "byte_fallback": false, "ignore_merges": true,
              "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": [["a", "b"]]}})");
}

// The ll::Error message of building a tokenizer from `j` ("" when it loads).
std::string error_from(const std::string& text) {
  return error_of(
      [&] { ll::HfTokenizer t(ll::hf::parse_tokenizer_json(text, "tok.json"), "tok.json"); });
}
std::string error_from(const json& j) { return error_from(j.dump()); }

}  // namespace

TEST_CASE("the minimal tokenizer loads and encodes") {
  const ll::HfTokenizer t(ll::hf::parse_tokenizer_json(minimal().dump(), "tok.json"), "tok.json");
  CHECK(t.encode("ab<|end|>ba") == std::vector<int>{2, 3, 1, 0});
  CHECK(t.decode({2, 3}) == "ab<|end|>");
  CHECK(t.vocab_size() == 4);
}

TEST_CASE("truncated and non-JSON files") {
  const std::string text = minimal().dump();
  for (size_t cut : {size_t(0), size_t(1), text.size() / 3, text.size() - 1}) {
    const std::string msg = error_from(text.substr(0, cut));
    CHECK(contains(msg, "tok.json"));
    CHECK(contains(msg, "not valid JSON"));
  }
  CHECK(contains(error_from(std::string("[1, 2]")), "expected an object"));
}

TEST_CASE("wrong types name the field") {
  json j = minimal();
  j["model"]["vocab"] = json::array();
  CHECK(contains(error_from(j), "model.vocab"));
  j = minimal();
  j["model"]["vocab"]["a"] = "zero";
  CHECK(contains(error_from(j), "model.vocab[\"a\"]"));
  j = minimal();
  j["model"]["ignore_merges"] = 1;
  CHECK(contains(error_from(j), "model.ignore_merges"));
  j = minimal();
  j["added_tokens"][0]["lstrip"] = "yes";
  CHECK(contains(error_from(j), "added_tokens[0].lstrip"));
  j = minimal();
  j["added_tokens"] = json::object();
  CHECK(contains(error_from(j), "added_tokens"));
  j = minimal();
  j["pre_tokenizer"]["pretokenizers"][0]["pattern"] = "\\s+";
  CHECK(contains(error_from(j), "pre_tokenizer.pretokenizers[0].pattern"));
  j = minimal();
  j["model"]["merges"] = json::array({json::array({"a"})});
  CHECK(contains(error_from(j), "model.merges[0]"));
  j = minimal();
  j["model"]["merges"] = json::array({"a  b"});
  CHECK(contains(error_from(j), "model.merges[0]"));
  j = minimal();
  j["version"] = "2.0";
  CHECK(contains(error_from(j), "version"));
}

TEST_CASE("huge numbers, out-of-range and duplicate ids") {
  json j = minimal();
  j["model"]["vocab"]["a"] = 1e30;
  CHECK(contains(error_from(j), "model.vocab[\"a\"]"));
  j = minimal();
  j["model"]["vocab"]["a"] = uint64_t(18446744073709551615ull);
  CHECK(contains(error_from(j), "out of range"));
  j = minimal();
  j["model"]["vocab"]["a"] = -1;
  CHECK(contains(error_from(j), "out of range"));
  j = minimal();
  j["model"]["vocab"]["a"] = 1 << 30;
  CHECK(contains(error_from(j), "out of range"));
  CHECK(contains(
      error_from(std::string(
          R"({"model": {"type": "BPE", "vocab": {"a": 99999999999999999999999}, "merges": []}})")),
      "model.vocab"));
  j = minimal();
  j["model"]["vocab"]["b"] = 0;
  CHECK(contains(error_from(j), "also the id of"));
  j = minimal();
  j["added_tokens"][0]["id"] = 1;  // the model's "b"
  CHECK(contains(error_from(j), "added_tokens"));
  j = minimal();
  j["added_tokens"].push_back(j["added_tokens"][0]);
  CHECK(contains(error_from(j), "listed twice"));
  j = minimal();
  j["added_tokens"][0]["id"] = -5;
  CHECK(contains(error_from(j), "added_tokens[0].id"));
  j = minimal();
  j["added_tokens"][0]["content"] = "";
  CHECK(contains(error_from(j), "added_tokens[0].content"));
  j = minimal();
  j["added_tokens"][0].erase("id");
  CHECK(contains(error_from(j), "added_tokens[0].id: missing"));
}

TEST_CASE("merges naming unknown pieces or making unknown pieces") {
  json j = minimal();
  j["model"]["merges"] = json::array({json::array({"a", "zz"})});
  CHECK(contains(error_from(j), "\"zz\" is not in model.vocab"));
  j = minimal();
  j["model"]["merges"] = json::array({json::array({"b", "a"})});
  CHECK(contains(error_from(j), "makes \"ba\""));
  j = minimal();
  j["model"]["unk_token"] = "<unk>";
  CHECK(contains(error_from(j), "model.unk_token"));
}

TEST_CASE("a regex PCRE2 rejects names the field and the offset") {
  json j = minimal();
  j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(?i:'s|[\\p{L}";
  const std::string msg = error_from(j);
  CHECK(contains(msg, "PCRE2 rejects the regex"));
  CHECK(contains(msg, "Split pattern"));
  j = minimal();
  j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "\\p{NoSuchProperty}";
  CHECK(contains(error_from(j), "PCRE2"));
}

TEST_CASE("unsupported models, normalizers, pre-tokenizers, decoders are refused by name") {
  json j = minimal();
  j["model"]["type"] = "WordPiece";
  CHECK(contains(error_from(j), "model.type: the model \"WordPiece\""));
  j["model"]["type"] = "Unigram";
  CHECK(contains(error_from(j), "\"Unigram\""));
  j = minimal();
  j["normalizer"] = json{{"type", "Lowercase"}};
  CHECK(contains(error_from(j), "normalizer.type: the normalizer \"Lowercase\""));
  j = minimal();
  j["pre_tokenizer"]["pretokenizers"][1] = json{{"type", "Whitespace"}};
  CHECK(contains(error_from(j), "pre_tokenizer.pretokenizers[1].type"));
  j = minimal();
  j["decoder"] = json{{"type", "WordPiece"}, {"prefix", "##"}};
  CHECK(contains(error_from(j), "decoder.type"));
  j = minimal();
  j["post_processor"] = json{{"type", "BertProcessing"}};
  CHECK(contains(error_from(j), "post_processor.type"));
  j = minimal();
  j["model"]["dropout"] = 0.1;
  CHECK(contains(error_from(j), "model.dropout"));
  j = minimal();
  j["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Sideways";
  CHECK(contains(error_from(j), "behavior"));
}

TEST_CASE("tokenizer_config.json naming a missing token or of the wrong type") {
  ll::test::ScratchDir dir("tokenizer_json_asan");
  ll::test::write_file(dir.file("tokenizer.json"), minimal().dump());
  ll::test::write_file(dir.file("tokenizer_config.json"), R"({"bos_token": "<s>"})");
  CHECK(contains(error_of([&] { ll::Tokenizer t(dir.file("tokenizer.json")); }), "\"<s>\""));
  ll::test::write_file(dir.file("tokenizer_config.json"), R"({"eos_token": 7})");
  CHECK(contains(error_of([&] { ll::Tokenizer t(dir.file("tokenizer.json")); }), "eos_token"));
  ll::test::write_file(dir.file("tokenizer_config.json"),
                       R"({"eos_token": "<|end|>", "add_bos_token": true})");
  CHECK(contains(error_of([&] { ll::Tokenizer t(dir.file("tokenizer.json")); }), "add_bos_token"));
  ll::test::write_file(dir.file("tokenizer_config.json"), R"({"eos_token": "<|end|>")");
  CHECK(contains(error_of([&] { ll::Tokenizer t(dir.file("tokenizer.json")); }),
                 "tokenizer_config.json"));
  ll::test::write_file(dir.file("tokenizer_config.json"), R"({"eos_token": "<|end|>"})");
  ll::test::write_file(dir.file("config.json"), R"({"bos_token_id": [99999999]})");
  CHECK(contains(error_of([&] { ll::Tokenizer t(dir.file("tokenizer.json")); }), "bos_token_id"));
  ll::test::write_file(dir.file("config.json"), R"({"bos_token_id": 0})");
  const ll::Tokenizer t(dir.file("tokenizer.json"));
  CHECK(t.eos_id() == 3);
  CHECK(t.bos_id() == 0);
}

TEST_CASE("randomly damaged fixture files load or throw ll::Error") {
  const std::string good =
      ll::test::read_file(ll::test::tokenizer_json_dir("qwen2") + "/tokenizer.json");
  std::mt19937 rng(std::random_device{}());
  int rejected = 0;
  for (int trial = 0; trial < 60; ++trial) {
    std::string b = good;
    if (trial % 2 == 0) {
      b.resize(rng() % b.size());
    } else {
      for (int k = 0; k < 4; ++k) b[rng() % b.size()] = "{}[]\",:0 9-e\\\xff"[rng() % 14];
    }
    try {
      const ll::HfTokenizer t(ll::hf::parse_tokenizer_json(b, "damaged.json"), "damaged.json");
      (void)t.encode("Hello, world! 123 <|im_end|>");
      (void)t.decode({0, 1, 2});
    } catch (const ll::Error&) {
      ++rejected;
    }
  }
  CHECK(rejected > 0);
}
