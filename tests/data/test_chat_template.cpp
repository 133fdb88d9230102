// SFT chat formats against transformers' apply_chat_template (fixture made by
// tests/reference/make_tokenizer_json_fixtures.py with Meta-Llama-3-8B-Instruct's and
// Qwen2.5-Instruct's real templates): the same tokens, the prompt ends where the answer starts,
// and only the answer and the end-of-turn token are labelled.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "data/chat_template.h"
#include "data/sft_dataset.h"
#include "tests/data/tokenizer_json_fixture.h"

using json = nlohmann::json;
using namespace ll::test;

namespace {

void check_family(const std::string& family, const std::string& tokenizer_name,
                  ll::ChatTemplate chat, const std::string& end_token) {
  const ll::Tokenizer tok(tokenizer_json_dir(tokenizer_name) + "/tokenizer.json");
  CHECK(ll::default_chat_template(tok) == chat);
  const std::string records_path = tokenizer_json_dir("chat/records.json");
  const std::vector<ll::SftRecord> records = ll::read_sft_records(records_path);
  const json want = json::parse(read_file(tokenizer_json_dir("chat/" + family + ".json")));
  REQUIRE(want.at("format") == "ll-chat-expected");
  REQUIRE(want.at("version") == 1);
  const json& examples = want.at("examples");
  REQUIRE(examples.size() == records.size());
  const int end_id = *tok.token_id(end_token);
  for (size_t i = 0; i < records.size(); ++i) {
    INFO(family << " record " << i);
    const ll::ChatTurns turns = ll::sft_chat_turns(records[i]);
    CHECK(ll::render_chat(chat, turns, tok) == examples[i].at("text").get<std::string>());
    CHECK(ll::render_chat_prompt(chat, turns, tok) ==
          examples[i].at("prompt_text").get<std::string>());
    const ll::SftExample ex = ll::tokenize_sft_record(records[i], tok, 4096, chat);
    const auto tokens = examples[i].at("tokens").get<std::vector<int32_t>>();
    const auto prompt = examples[i].at("prompt_tokens").get<std::vector<int32_t>>();
    CHECK(ex.tokens == tokens);
    CHECK(ex.source_len == int64_t(prompt.size()));
    // The prompt's tokens are a prefix of the conversation's.
    CHECK(std::equal(prompt.begin(), prompt.end(), tokens.begin()));
    // Labelled: the answer tokens and the end of turn; nothing after it.
    REQUIRE(ex.end() >= 1);
    CHECK(ex.tokens[size_t(ex.end() - 1)] == end_id);
    const std::vector<int32_t> targets = ll::sft_targets(ex);
    for (size_t t = 0; t < targets.size(); ++t) {
      const bool labelled = int64_t(t) + 1 >= ex.source_len && int64_t(t) + 1 < ex.end();
      CHECK(targets[t] == (labelled ? ex.tokens[t + 1] : -1));
    }
    CHECK(targets[size_t(ex.end() - 2)] == end_id);
    CHECK(ex.labelled() == ex.end() - ex.source_len);
  }
}

}  // namespace

TEST_CASE("llama3: Meta-Llama-3-Instruct's template tokens, labels to <|eot_id|>") {
  check_family("llama3", "llama3", ll::ChatTemplate::Llama3, "<|eot_id|>");
}

TEST_CASE("chatml: Qwen2.5-Instruct's template tokens, labels to <|im_end|> (not its newline)") {
  check_family("chatml", "qwen2", ll::ChatTemplate::ChatMl, "<|im_end|>");
}

TEST_CASE("the default format follows the family; a format needs its tokens") {
  const ll::Tokenizer sp(fixture_tokenizer());
  CHECK(ll::default_chat_template(sp) == ll::ChatTemplate::Llama2);
  const ll::Tokenizer llama2(tokenizer_json_dir("llama2_metaspace") + "/tokenizer.json");
  CHECK(ll::default_chat_template(llama2) == ll::ChatTemplate::Llama2);
  CHECK(ll::chat_template_for("auto", llama2) == ll::ChatTemplate::Llama2);
  CHECK(ll::chat_template_for("chatml", llama2) == ll::ChatTemplate::ChatMl);
  CHECK(contains(error_of([&] { ll::check_chat_template(ll::ChatTemplate::Llama3, llama2); }),
                 "<|start_header_id|>"));
  CHECK(contains(error_of([&] { ll::chat_template_for("vicuna", llama2); }), "--chat-template"));
  const ll::Tokenizer qwen(tokenizer_json_dir("qwen2") + "/tokenizer.json");
  // Qwen2.5 has no BOS: llama2's BOS + prompt + EOS examples are refused for it.
  const std::vector<ll::SftRecord> records{{"q", "", "a", ""}};
  CHECK(contains(error_of([&] {
                   ll::build_sft_dataset(records, qwen, 64, "x.json", ll::ChatTemplate::Llama2);
                 }),
                 "no BOS"));
  const ll::SftDataset ds =
      ll::build_sft_dataset(records, qwen, 64, "x.json", ll::ChatTemplate::ChatMl);
  CHECK(ds.examples.size() == 1);
}

TEST_CASE("a truncated chat example keeps its labels inside the cut") {
  const ll::Tokenizer tok(tokenizer_json_dir("qwen2") + "/tokenizer.json");
  const ll::SftRecord r{"Tell me about Enos.", "", "Seth begat Enos, and Enos begat Cainan.", ""};
  const ll::SftExample full = ll::tokenize_sft_record(r, tok, 4096, ll::ChatTemplate::ChatMl);
  const int64_t cut = full.source_len + 2;
  const ll::SftExample ex = ll::tokenize_sft_record(r, tok, cut, ll::ChatTemplate::ChatMl);
  CHECK(ex.truncated);
  CHECK(ex.labelled() == 2);
  CHECK(ll::sft_targets(ex).back() == -1);
}
