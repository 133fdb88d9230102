// tokenizer.json against the `tokenizers` library: for each fixture tokenizer (Llama-3, Qwen2
// and Mistral-Nemo byte-level BPE, Llama-2 Metaspace/byte-fallback in both converted forms),
// every id of the King James Bible and of a Unicode stress text equals the library's, and
// decode gives the library's text back (tests/reference/make_tokenizer_json_fixtures.py).
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "data/hf_tokenizer.h"
#include "data/tokenizer.h"
#include "data/tokenizer_json.h"
#include "tests/data/tokenizer_json_fixture.h"

using json = nlohmann::json;
using namespace ll::test;

namespace {

json expected_of(const std::string& name) {
  const json e = json::parse(read_file(tokenizer_json_dir(name) + "/expected.json"));
  REQUIRE(e.at("format") == "ll-tokenizer-expected");
  REQUIRE(e.at("version") == 1);
  return e;
}

// Compares ids with one text's expected entry; the block hashes say where a mismatch starts.
void check_ids(const std::vector<int>& ids, const json& want, const std::string& what) {
  INFO(what);
  CHECK(ids.size() == want.at("count").get<size_t>());
  const auto head = want.at("head").get<std::vector<int>>();
  CHECK(std::vector<int>(ids.begin(),
                         ids.begin() + std::ptrdiff_t(std::min(ids.size(), head.size()))) == head);
  const size_t block = want.at("block").get<size_t>();
  const auto blocks = want.at("block_fnv1a64").get<std::vector<std::string>>();
  for (size_t b = 0; b < blocks.size() && b * block < ids.size(); ++b) {
    const size_t n = std::min(block, ids.size() - b * block);
    if (ids_fnv1a64(ids.data() + b * block, n) != blocks[b]) {
      FAIL_CHECK("first differing block starts at id " << b * block);
      break;
    }
  }
  CHECK(ids_fnv1a64(ids.data(), ids.size()) == want.at("fnv1a64").get<std::string>());
}

}  // namespace

TEST_CASE("every fixture tokenizer gives the library's ids and text on the Unicode stress text") {
  const std::string text = stress_text();
  for (const std::string& name : tokenizer_json_names()) {
    INFO(name);
    const ll::Tokenizer tok(tokenizer_json_dir(name) + "/tokenizer.json");
    const json e = expected_of(name);
    CHECK(tok.vocab_size() == e.at("vocab_size").get<int>());
    const json& want = e.at("texts").at("stress");
    const std::vector<int> ids = tok.encode(text);
    CHECK(ids == want.at("ids").get<std::vector<int>>());
    check_ids(ids, want, "stress");
    const std::string decoded = tok.decode(ids);
    CHECK(decoded == want.at("decoded").get<std::string>());
  }
}

TEST_CASE("every fixture tokenizer gives the library's ids and text on the King James Bible") {
  const std::string text = kjv_text();
  for (const std::string& name : tokenizer_json_names()) {
    INFO(name);
    const ll::Tokenizer tok(tokenizer_json_dir(name) + "/tokenizer.json");
    const json want = expected_of(name).at("texts").at("kjv");
    const std::vector<int> ids = tok.encode(text);
    check_ids(ids, want, "kjv");
    const std::string decoded = tok.decode(ids);
    CHECK(fnv1a64(decoded.data(), decoded.size()) == want.at("decoded_fnv1a64").get<std::string>());
    CHECK((decoded == text) == want.at("round_trip").get<bool>());
  }
}

TEST_CASE("merges in the \"a b\" string form give the same ids as the [a, b] pair form") {
  json j = json::parse(read_file(tokenizer_json_dir("llama3") + "/tokenizer.json"));
  for (json& m : j.at("model").at("merges"))
    m = m[0].get<std::string>() + " " + m[1].get<std::string>();
  const ll::HfTokenizer strings(ll::hf::parse_tokenizer_json(j.dump(), "strings.json"), "strings");
  const ll::Tokenizer pairs(tokenizer_json_dir("llama3") + "/tokenizer.json");
  const std::string text = stress_text();
  CHECK(strings.encode(ll::test::read_file(tokenizer_json_dir("stress.txt")).substr(0, 800)) ==
        pairs.encode(text.substr(0, 800)));
}

TEST_CASE("BOS/EOS per family from tokenizer_config.json and the post-processor") {
  const ll::Tokenizer llama3(tokenizer_json_dir("llama3") + "/tokenizer.json");
  CHECK(llama3.bos_id() == *llama3.token_id("<|begin_of_text|>"));
  CHECK(llama3.eos_id() == *llama3.token_id("<|eot_id|>"));
  CHECK(llama3.add_bos());
  CHECK(llama3.kind() == ll::TokenizerKind::HuggingFaceJson);

  const ll::Tokenizer qwen(tokenizer_json_dir("qwen2") + "/tokenizer.json");
  CHECK(qwen.bos_id() == -1);  // Qwen2.5 has no BOS
  CHECK(!qwen.add_bos());
  CHECK(qwen.eos_id() == *qwen.token_id("<|im_end|>"));
  CHECK(qwen.token_id("<|im_start|>").has_value());
  CHECK(!qwen.token_id("<|no_such_token|>").has_value());

  // Mistral-Nemo: control tokens at ids 0.. are both model pieces and added tokens.
  const ll::Tokenizer nemo(tokenizer_json_dir("nemo") + "/tokenizer.json");
  CHECK(nemo.bos_id() == 1);
  CHECK(nemo.eos_id() == 2);
  CHECK(nemo.add_bos());
  CHECK(nemo.token_id("[INST]") == 3);
  CHECK(nemo.encode("[INST]hi[/INST]").front() == 3);

  const ll::Tokenizer llama2(tokenizer_json_dir("llama2_legacy") + "/tokenizer.json");
  CHECK(llama2.bos_id() == 1);
  CHECK(llama2.eos_id() == 2);
  CHECK(llama2.add_bos());

  // The SentencePiece model the Llama-2 fixtures were made from: same pieces, same specials.
  const ll::Tokenizer sp(fixture_tokenizer());
  CHECK(sp.kind() == ll::TokenizerKind::SentencePiece);
  CHECK(sp.add_bos());
  CHECK(sp.token_id("</s>") == 2);
  CHECK(!sp.token_id("no such piece").has_value());
  CHECK(llama2.encode("the GNU General Public License") ==
        sp.encode("the GNU General Public License"));
}

TEST_CASE("invalid UTF-8 is replaced by U+FFFD per maximal subpart before encoding") {
  const ll::Tokenizer tok(tokenizer_json_dir("llama3") + "/tokenizer.json");
  CHECK(tok.encode("a\xff"
                   "b") == tok.encode("a\xEF\xBF\xBD"
                                      "b"));
  CHECK(tok.encode("\xed\xa0\x80") == tok.encode("\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD"));
  CHECK(tok.encode("\xf0\x9f\x98 x") == tok.encode("\xEF\xBF\xBD x"));
  CHECK(tok.encode("").empty());
}

TEST_CASE("long runs (whitespace, one letter, digits, no pre-tokenizer split) encode and decode") {
  for (const std::string name : {"llama3", "qwen2", "llama2_metaspace"}) {
    INFO(name);
    const ll::Tokenizer tok(tokenizer_json_dir(name) + "/tokenizer.json");
    for (const std::string& text :
         {std::string(300000, ' ') + "x", std::string(200000, '\n'), std::string(100000, 'a'),
          std::string(100000, '7'), "a" + std::string(100000, '\t') + " b"}) {
      const std::vector<int> ids = tok.encode(text);
      CHECK(!ids.empty());
      if (name != "llama2_metaspace") CHECK(tok.decode(ids) == text);  // Strip/prefix aside
    }
  }
}
