#pragma once
// Where a model's tokenizer.model is: every tool that turns text into ids (passkey, generate,
// ...) finds it the same way.
#include <string>

namespace ll {

// The SentencePiece model for `model_path`: `override_path` when it is not empty (the tool's
// --tokenizer flag); else MODEL_DIR/tokenizer.model for a Hugging Face directory, or
// tokenizer.model beside the file for our .bin (where ./convert and ./export_hf put it).
// Throws ll::Error naming the path looked at and the flag to pass when it is missing.
std::string find_tokenizer_model(const std::string& model_path, const std::string& override_path);

}  // namespace ll
