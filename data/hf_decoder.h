#pragma once
// A tokenizer.json decoder chain (ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace):
// token strings back to text, as the library's decode_chain does step by step.
#include <memory>
#include <string>
#include <vector>

#include "data/hf_normalizer.h"
#include "data/tokenizer_json.h"

namespace ll {

class HfDecoder {
 public:
  // `has_decoder` false: the file has none and tokens are joined with spaces (the library's
  // default).
  HfDecoder(bool has_decoder, const std::vector<hf::Decoder>& steps, const std::string& name);
  ~HfDecoder();
  HfDecoder(HfDecoder&&) noexcept;
  HfDecoder& operator=(HfDecoder&&) noexcept;

  std::string decode(std::vector<std::string> tokens) const;

 private:
  struct Step;
  bool has_decoder_;
  std::vector<Step> steps_;
};

}  // namespace ll
