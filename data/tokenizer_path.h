#pragma once
// Where a model's tokenizer is: every tool that turns text into ids (tokenize, passkey,
// generate, train_longlora --sft) finds it the same way.
#include <string>
#include <vector>

namespace ll {

// The tokenizer for `model_path`: `override_path` when it is not empty (the tool's --tokenizer
// flag: a tokenizer.json or a tokenizer.model); else, in MODEL_DIR for a Hugging Face directory
// or beside the file for our .bin, tokenizer.json when it exists, then tokenizer.model.
// Throws ll::Error naming the paths looked at and the flag to pass when neither exists.
std::string find_tokenizer(const std::string& model_path, const std::string& override_path);

// The tokenizer in `dir` by the same rule (tokenizer.json, then tokenizer.model), or "" when
// there is none. For the model loaders, which record it without requiring one.
std::string tokenizer_in_dir(const std::string& dir);

// One file of a tokenizer: where it is, and the name it has beside a model (the tokenizer itself
// under its kind's name, tokenizer.json or tokenizer.model, whatever --tokenizer called it).
struct TokenizerFile {
  std::string path;
  std::string name;
};

// The files a tokenizer consists of: `tokenizer_path` itself, then those beside it that carry
// its settings (tokenizer_config.json: BOS/EOS, chat template; special_tokens_map.json) when
// they exist. What convert and export_hf copy next to a model.
std::vector<TokenizerFile> tokenizer_files(const std::string& tokenizer_path);

// The former name, kept for the tools that call it.
inline std::string find_tokenizer_model(const std::string& model_path,
                                        const std::string& override_path) {
  return find_tokenizer(model_path, override_path);
}

}  // namespace ll
