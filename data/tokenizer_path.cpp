#include "data/tokenizer_path.h"

#include <filesystem>
#include <system_error>

#include "common/error.h"

namespace ll {

namespace fs = std::filesystem;

std::string find_tokenizer(const std::string& model_path, const std::string& override_path) {
  std::error_code ec;
  if (!override_path.empty()) {
    LL_CHECK(fs::is_regular_file(override_path, ec),
             "{}: tokenizer not found (--tokenizer must name a tokenizer.json or a SentencePiece "
             "tokenizer.model file)",
             override_path);
    return override_path;
  }
  LL_CHECK(!model_path.empty(),
           "no model given: pass -m MODEL (a Hugging Face directory or our "
           ".bin) or --tokenizer PATH");
  LL_CHECK(fs::exists(model_path, ec), "{}: no such model file or directory", model_path);
  // A directory holds it; a .bin has it beside the file (parent "" means the current one).
  fs::path dir =
      fs::is_directory(model_path, ec) ? fs::path(model_path) : fs::path(model_path).parent_path();
  if (dir.empty()) dir = ".";
  const std::string found = tokenizer_in_dir(dir.string());
  if (!found.empty()) return found;
  fail(
      "{}: no tokenizer: neither {} nor {} exists; pass --tokenizer PATH (the base model's "
      "tokenizer.json or tokenizer.model)",
      model_path, (dir / "tokenizer.json").string(), (dir / "tokenizer.model").string());
}

std::string tokenizer_in_dir(const std::string& dir) {
  std::error_code ec;
  for (const char* name : {"tokenizer.json", "tokenizer.model"}) {
    const fs::path candidate = fs::path(dir.empty() ? "." : dir) / name;
    if (fs::is_regular_file(candidate, ec)) return candidate.string();
  }
  return "";
}

std::vector<TokenizerFile> tokenizer_files(const std::string& tokenizer_path) {
  const bool is_json = fs::path(tokenizer_path).extension() == ".json";
  std::vector<TokenizerFile> files = {
      {tokenizer_path, is_json ? "tokenizer.json" : "tokenizer.model"}};
  const fs::path dir = fs::path(tokenizer_path).parent_path();
  std::error_code ec;
  for (const char* name : {"tokenizer_config.json", "special_tokens_map.json"}) {
    const fs::path companion = (dir.empty() ? fs::path(".") : dir) / name;
    if (fs::is_regular_file(companion, ec)) files.push_back({companion.string(), name});
  }
  return files;
}

}  // namespace ll
