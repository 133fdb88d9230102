#pragma once
// Supervised fine-tuning data as LongLoRA's supervised-fine-tune.py prepares LongAlpaca:
// instruction records -> a chat format (data/chat_template.h; llama2 is LongLoRA's own prompt)
// -> token ids with the loss on the answer only.
//
// File: a JSON array of records (LongAlpaca-12k.json), or JSON Lines (one record a line) when
// the file does not start with '['. A record is an object {"instruction": str, "input": str
// (optional; null counts as absent), "output": str, "system": str (optional; the llama3 and
// chatml formats' system message, ignored by llama2)}; other fields are ignored.
//
// Example, llama2 (exactly the official preprocess()): prompt + output is tokenized as ONE
// string with BOS first and EOS last; source_len is the token count of BOS + prompt tokenized
// alone. llama3/chatml: the template's whole conversation is tokenized (exactly
// apply_chat_template's tokens); source_len is the token count of the prompt with the generation
// prompt; label_end is just after the end-of-turn token (<|eot_id|>, <|im_end|>), so the
// template's trailing "\n" after <|im_end|> carries no loss.
// Positions < source_len carry no loss; the answer tokens and the end of turn do. Longer than
// max_tokens: cut to max_tokens (the official truncates at model_max_length); a record left
// with no labelled token is skipped and counted.
#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "data/chat_template.h"
#include "data/tokenizer.h"

namespace ll {

struct SftRecord {
  std::string instruction;
  std::string input;  // "" when absent
  std::string output;
  std::string system = {};  // "" when absent (llama3/chatml only)
};

// Reads and checks every record of `path`. Throws ll::Error naming the file and the line and
// column of malformed JSON, the record (0-based index; and line for JSON Lines) and the field
// of a record that is not an object, lacks "instruction" or "output" or has a non-string one,
// and an empty file or array.
std::vector<SftRecord> read_sft_records(const std::string& path);
// The same on text in memory; `name` stands for the file in messages.
std::vector<SftRecord> parse_sft_records(const std::string& text, const std::string& name);

// The prompt the model sees before the answer: "[INST]{instruction}[/INST]" without input, the
// Llama-2 system template with it (kLlama2SystemPrompt, then " {instruction} \n{input} [/INST]").
std::string sft_prompt(const SftRecord& record);
extern const char* const kLlama2SystemPrompt;

// One training example. targets (sft_targets) are the next-token targets the model trains on.
struct SftExample {
  int64_t record = 0;           // index of its record in the file
  std::vector<int32_t> tokens;  // [N] BOS, prompt + output ids, EOS; at most max_tokens
  int64_t source_len = 0;       // BOS + prompt ids: positions < source_len are not labelled
  int64_t label_end = -1;       // tokens >= label_end are not labelled either; -1: N
  bool truncated = false;       // cut to max_tokens
  // One past the last labelled token.
  int64_t end() const {
    const int64_t n = int64_t(tokens.size());
    return label_end < 0 ? n : std::min(label_end, n);
  }
  // Labelled next-token targets: tokens [source_len, end()) are predicted.
  int64_t labelled() const { return end() - source_len; }
};

// targets[t] = tokens[t+1] where source_len <= t+1 < end(), else -1; targets[N-1] = -1. [N]
std::vector<int32_t> sft_targets(const SftExample& example);

// Tokenizes one record in the chat format `chat`; `max_tokens` >= 2. The result may have
// labelled() <= 0 (nothing to learn): build_sft_dataset skips those.
SftExample tokenize_sft_record(const SftRecord& record, const Tokenizer& tokenizer,
                               int64_t max_tokens, ChatTemplate chat = ChatTemplate::Llama2);
// The llama3/chatml conversation of a record: system, user = instruction (+ "\n" + input when
// the input is not empty), assistant = output.
ChatTurns sft_chat_turns(const SftRecord& record);

struct SftDataset {
  std::vector<SftExample> examples;  // the kept examples, in file order
  int64_t records = 0;               // records in the file
  int64_t truncated = 0;             // kept examples cut to max_tokens
  int64_t skipped_truncated = 0;     // the prompt alone fills max_tokens: no answer token left
  int64_t skipped_unlabelled = 0;    // no answer token even untruncated
  int64_t max_tokens = 0;
  int64_t skipped() const { return skipped_truncated + skipped_unlabelled; }
};

// Tokenizes every record (in parallel; the result does not depend on the thread count), then
// collect_sft_examples. Throws ll::Error naming `name` when no record is left to train on.
SftDataset build_sft_dataset(const std::vector<SftRecord>& records, const Tokenizer& tokenizer,
                             int64_t max_tokens, const std::string& name,
                             ChatTemplate chat = ChatTemplate::Llama2);
// The counting half of build_sft_dataset: `tokenized` holds one example per record, in file
// order, from tokenize_sft_record at `max_tokens`; those without a labelled token are dropped
// and counted (as skipped_truncated when truncation removed their answer).
SftDataset collect_sft_examples(std::vector<SftExample> tokenized, int64_t max_tokens,
                                const std::string& name);

// Sizes for the setup line.
struct SftDatasetSummary {
  int64_t tokens = 0;                                // over all kept examples
  int64_t labelled_tokens = 0;                       // over all kept examples
  int64_t min_len = 0, median_len = 0, max_len = 0;  // example lengths in tokens
};
SftDatasetSummary summarize_sft_dataset(const SftDataset& dataset);

}  // namespace ll
