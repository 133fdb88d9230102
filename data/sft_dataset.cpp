#include "data/sft_dataset.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string_view>
#include <system_error>
#include <utility>

#include "common/error.h"

namespace ll {

// LongLoRA's PROMPT_DICT["prompt_input_llama2"] up to {instruction} (the two spaces after
// "safe." and the space after "<</SYS>>" are the official text's).
const char* const kLlama2SystemPrompt =
    "[INST] <<SYS>>\n"
    "You are a helpful, respectful and honest assistant. Always answer as helpfully as possible, "
    "while being safe.  Your answers should not include any harmful, unethical, racist, sexist, "
    "toxic, dangerous, or illegal content. Please ensure that your responses are socially "
    "unbiased and positive in nature.\n\n"
    "If a question does not make any sense, or is not factually coherent, explain why instead "
    "of answering something not correct. If you don't know the answer to a question, please "
    "don't share false information.\n"
    "<</SYS>> \n\n";

namespace {

using json = nlohmann::json;

// 1-based line and column of the byte at 0-based `offset` (clamped to the text).
struct TextPos {
  int64_t line = 1, column = 1;
};
TextPos text_pos(std::string_view text, size_t offset) {
  offset = std::min(offset, text.size());
  const std::string_view before = text.substr(0, offset);
  TextPos p;
  p.line = 1 + int64_t(std::count(before.begin(), before.end(), '\n'));
  const size_t nl = before.rfind('\n');
  p.column = int64_t(nl == std::string_view::npos ? offset + 1 : offset - nl);
  return p;
}

// nlohmann's message without its "[json.exception...] parse error at line L, column C: "
// prefix: the position is given our way, relative to the whole file.
std::string parse_error_reason(const json::parse_error& e) {
  const std::string what = e.what();
  const size_t at = what.find("parse error");
  const size_t colon = at == std::string::npos ? at : what.find(": ", at);
  return colon == std::string::npos ? what : what.substr(colon + 2);
}

// e.byte counts the characters read, so the offending one is at 0-based e.byte - 1.
TextPos error_pos(std::string_view text, const json::parse_error& e) {
  return text_pos(text, e.byte > 0 ? size_t(e.byte - 1) : 0);
}

// One field of a record, moved out of the JSON: required ones must be strings; "input" may
// be absent or null ("").
std::string take_string(json& record, const char* key, bool required, const std::string& where) {
  const auto it = record.find(key);
  if (it == record.end() || (!required && it->is_null())) {
    LL_CHECK(!required,
             "{}: missing \"{}\" (every record needs \"instruction\" and \"output\" strings; "
             "\"input\" is optional)",
             where, key);
    return {};
  }
  LL_CHECK(it->is_string(), "{}: \"{}\" must be a string, got {} {}", where, key,
           it->is_array() || it->is_object() ? "an" : "a", it->type_name());
  return std::move(it->get_ref<std::string&>());
}

SftRecord record_from_json(json& j, const std::string& where) {
  LL_CHECK(j.is_object(),
           "{}: expected an object with \"instruction\" and \"output\" strings, got {} {}", where,
           j.is_array() || j.is_object() ? "an" : "a", j.type_name());
  SftRecord r;
  r.instruction = take_string(j, "instruction", true, where);
  r.input = take_string(j, "input", false, where);
  r.output = take_string(j, "output", true, where);
  r.system = take_string(j, "system", false, where);
  return r;
}

std::vector<SftRecord> parse_json_array(std::string_view text, size_t start,
                                        const std::string& name) {
  json doc;
  try {
    doc = json::parse(text.begin() + std::ptrdiff_t(start), text.end());
  } catch (const json::parse_error& e) {
    const TextPos p = text_pos(text, start + (e.byte > 0 ? size_t(e.byte - 1) : 0));
    fail("{}:{}:{}: malformed JSON: {}", name, p.line, p.column, parse_error_reason(e));
  }
  LL_CHECK(doc.is_array(), "{}: expected a JSON array of records", name);
  LL_CHECK(!doc.empty(),
           "{}: the array holds no records; an SFT file is a JSON array (or JSON Lines) of "
           "{{\"instruction\", \"input\", \"output\"}} objects",
           name);
  std::vector<SftRecord> records;
  records.reserve(doc.size());
  for (size_t i = 0; i < doc.size(); ++i) {
    records.push_back(record_from_json(doc[i], fmt::format("{}: record {}", name, i)));
    doc[i] = nullptr;  // the strings moved out; release the rest as we go
  }
  return records;
}

std::vector<SftRecord> parse_json_lines(std::string_view text, const std::string& name) {
  std::vector<SftRecord> records;
  size_t line_start = 0;
  for (int64_t line = 1; line_start < text.size(); ++line) {
    size_t line_end = text.find('\n', line_start);
    if (line_end == std::string_view::npos) line_end = text.size();
    const std::string_view body = text.substr(line_start, line_end - line_start);
    const size_t next = line_end + 1;
    if (body.find_first_not_of(" \t\r") == std::string_view::npos) {  // blank line
      line_start = next;
      continue;
    }
    json j;
    try {
      j = json::parse(body.begin(), body.end());
    } catch (const json::parse_error& e) {
      fail(
          "{}:{}:{}: malformed JSON Lines record: {} (a file that does not start with '[' is "
          "read as JSON Lines: one record object per line)",
          name, line, error_pos(body, e).column, parse_error_reason(e));
    }
    records.push_back(
        record_from_json(j, fmt::format("{}:{}: record {}", name, line, records.size())));
    line_start = next;
  }
  LL_CHECK(!records.empty(),
           "{}: no records (the file is blank); an SFT file is a JSON array (or JSON Lines) of "
           "{{\"instruction\", \"input\", \"output\"}} objects",
           name);
  return records;
}

}  // namespace

std::vector<SftRecord> parse_sft_records(const std::string& text, const std::string& name) {
  std::string_view body = text;
  size_t start = 0;
  if (body.substr(0, 3) == "\xEF\xBB\xBF") start = 3;  // a UTF-8 byte-order mark
  start = std::min(body.find_first_not_of(" \t\r\n", start), body.size());
  LL_CHECK(start < body.size(),
           "{}: the file is empty; an SFT file is a JSON array (or JSON Lines) of "
           "{{\"instruction\", \"input\", \"output\"}} objects",
           name);
  if (body[start] == '[') return parse_json_array(body, start, name);
  return parse_json_lines(body, name);
}

std::vector<SftRecord> read_sft_records(const std::string& path) {
  std::error_code ec;
  LL_CHECK(std::filesystem::exists(path, ec),
           "{}: no such file (--sft takes a JSON file of instruction records, e.g. "
           "LongAlpaca-12k.json)",
           path);
  LL_CHECK(!std::filesystem::is_directory(path, ec),
           "{}: is a directory; --sft takes one JSON file of instruction records", path);
  std::ifstream in(path, std::ios::binary);
  LL_CHECK(in.good(), "{}: cannot read the SFT data: {}", path, std::strerror(errno));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  LL_CHECK(!in.bad(), "{}: cannot read the SFT data: {}", path, std::strerror(errno));
  return parse_sft_records(text, path);
}

std::string sft_prompt(const SftRecord& record) {
  // The official code picks the template on example.get("input", "") != "".
  if (record.input.empty()) return "[INST]" + record.instruction + "[/INST]";
  return std::string(kLlama2SystemPrompt) + " " + record.instruction + " \n" + record.input +
         " [/INST]";
}

std::vector<int32_t> sft_targets(const SftExample& example) {
  const int64_t n = int64_t(example.tokens.size());
  std::vector<int32_t> targets(size_t(n), -1);  // [N]
  for (int64_t t = std::max<int64_t>(example.source_len, 1) - 1; t + 1 < example.end(); ++t)
    targets[size_t(t)] = example.tokens[size_t(t + 1)];
  return targets;
}

ChatTurns sft_chat_turns(const SftRecord& record) {
  ChatTurns c;
  c.system = record.system;
  c.user = record.input.empty() ? record.instruction : record.instruction + "\n" + record.input;
  c.assistant = record.output;
  return c;
}

namespace {

// llama3/chatml: the template's conversation as one text (its special-token text becomes the
// special ids, as apply_chat_template's tokenization does).
SftExample tokenize_chat_record(const SftRecord& record, const Tokenizer& tokenizer,
                                int64_t max_tokens, ChatTemplate chat) {
  const ChatTurns turns = sft_chat_turns(record);
  const std::vector<int> ids = tokenizer.encode(render_chat(chat, turns, tokenizer));
  const int64_t prompt_len =
      int64_t(tokenizer.encode(render_chat_prompt(chat, turns, tokenizer)).size());
  const int end_of_turn = end_of_turn_id(chat, tokenizer);
  SftExample ex;
  ex.tokens.assign(ids.begin(), ids.end());
  // Just after the template's last end-of-turn token (an answer may contain its text too).
  ex.label_end = int64_t(ex.tokens.size());
  while (ex.label_end > 0 && ex.tokens[size_t(ex.label_end - 1)] != end_of_turn) --ex.label_end;
  ex.source_len = prompt_len;
  if (int64_t(ex.tokens.size()) > max_tokens) {
    ex.tokens.resize(size_t(max_tokens));
    ex.truncated = true;
  }
  ex.source_len = std::min(ex.source_len, max_tokens);
  ex.label_end = std::min(ex.label_end, max_tokens);
  return ex;
}

}  // namespace

SftExample tokenize_sft_record(const SftRecord& record, const Tokenizer& tokenizer,
                               int64_t max_tokens, ChatTemplate chat) {
  LL_CHECK(max_tokens >= 2, "SFT examples need room for at least 2 tokens, got {}", max_tokens);
  if (chat != ChatTemplate::Llama2)
    return tokenize_chat_record(record, tokenizer, max_tokens, chat);
  const std::string prompt = sft_prompt(record);
  // One string, as the official code tokenizes source + target (its "</s>" text becomes the
  // EOS id); the prompt alone only gives the length of the unlabelled prefix.
  const std::vector<int> ids = tokenizer.encode(prompt + record.output);
  const std::vector<int> prompt_ids = tokenizer.encode(prompt);
  SftExample ex;
  ex.tokens.reserve(ids.size() + 2);
  ex.tokens.push_back(int32_t(tokenizer.bos_id()));
  for (int id : ids) ex.tokens.push_back(int32_t(id));
  ex.tokens.push_back(int32_t(tokenizer.eos_id()));
  ex.source_len = 1 + int64_t(prompt_ids.size());
  if (int64_t(ex.tokens.size()) > max_tokens) {
    ex.tokens.resize(size_t(max_tokens));
    ex.truncated = true;
  }
  ex.source_len = std::min(ex.source_len, max_tokens);
  return ex;
}

SftDataset build_sft_dataset(const std::vector<SftRecord>& records, const Tokenizer& tokenizer,
                             int64_t max_tokens, const std::string& name, ChatTemplate chat) {
  if (chat == ChatTemplate::Llama2) {
    LL_CHECK(tokenizer.bos_id() >= 0 && tokenizer.eos_id() >= 0,
             "the tokenizer for {} has no BOS or EOS piece (bos id {}, eos id {}); SFT examples "
             "are BOS + prompt + answer + EOS as Llama-2 expects (or pick --chat-template "
             "llama3/chatml for those families)",
             name, tokenizer.bos_id(), tokenizer.eos_id());
  }
  check_chat_template(chat, tokenizer);
  std::vector<SftExample> all(records.size());
  std::string error;  // the first failure inside the parallel loop
  const int64_t n = int64_t(records.size());
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t i = 0; i < n; ++i) {
    try {
      all[size_t(i)] = tokenize_sft_record(records[size_t(i)], tokenizer, max_tokens, chat);
      all[size_t(i)].record = i;
    } catch (const std::exception& e) {
#pragma omp critical(sft_tokenize_error)
      if (error.empty()) error = fmt::format("{}: record {}: {}", name, i, e.what());
    }
  }
  if (!error.empty()) throw Error(error);
  return collect_sft_examples(std::move(all), max_tokens, name);
}

SftDataset collect_sft_examples(std::vector<SftExample> tokenized, int64_t max_tokens,
                                const std::string& name) {
  SftDataset ds;
  ds.records = int64_t(tokenized.size());
  ds.max_tokens = max_tokens;
  for (SftExample& ex : tokenized) {
    if (ex.labelled() <= 0) {
      ++(ex.truncated ? ds.skipped_truncated : ds.skipped_unlabelled);
      continue;
    }
    if (ex.truncated) ++ds.truncated;
    ds.examples.push_back(std::move(ex));
  }
  LL_CHECK(!ds.examples.empty(),
           "{}: none of its {} records has an answer token to train on ({} have a prompt of "
           "-ctx {} tokens or more, {} have no answer tokens at all); use a larger -ctx or other "
           "data",
           name, ds.records, ds.skipped_truncated, max_tokens, ds.skipped_unlabelled);
  return ds;
}

SftDatasetSummary summarize_sft_dataset(const SftDataset& dataset) {
  SftDatasetSummary s;
  std::vector<int64_t> lengths;
  lengths.reserve(dataset.examples.size());
  for (const SftExample& ex : dataset.examples) {
    lengths.push_back(int64_t(ex.tokens.size()));
    s.tokens += int64_t(ex.tokens.size());
    s.labelled_tokens += ex.labelled();
  }
  if (lengths.empty()) return s;
  std::sort(lengths.begin(), lengths.end());
  s.min_len = lengths.front();
  s.median_len = lengths[(lengths.size() - 1) / 2];
  s.max_len = lengths.back();
  return s;
}

}  // namespace ll
