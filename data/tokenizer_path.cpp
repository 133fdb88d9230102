#include "data/tokenizer_path.h"

#include <filesystem>
#include <system_error>

#include "common/error.h"

namespace ll {

namespace fs = std::filesystem;

std::string find_tokenizer_model(const std::string& model_path, const std::string& override_path) {
  std::error_code ec;
  if (!override_path.empty()) {
    LL_CHECK(fs::is_regular_file(override_path, ec),
             "{}: tokenizer model not found (--tokenizer must name a SentencePiece "
             "tokenizer.model file)",
             override_path);
    return override_path;
  }
  LL_CHECK(!model_path.empty(),
           "no model given: pass -m MODEL (a Hugging Face directory or our "
           ".bin) or --tokenizer PATH");
  LL_CHECK(fs::exists(model_path, ec), "{}: no such model file or directory", model_path);
  // A directory holds it; a .bin has it beside the file (parent "" means the current one).
  const fs::path dir =
      fs::is_directory(model_path, ec) ? fs::path(model_path) : fs::path(model_path).parent_path();
  const fs::path candidate = (dir.empty() ? fs::path(".") : dir) / "tokenizer.model";
  LL_CHECK(fs::is_regular_file(candidate, ec),
           "{}: no tokenizer.model at {}; pass --tokenizer PATH (the tokenizer.model of the "
           "base model)",
           model_path, candidate.string());
  return candidate.string();
}

}  // namespace ll
