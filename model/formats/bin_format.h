#pragma once
// Our single-file model format (`-m llama2-7b.bin`), laid out for mmap:
//
//   offset 0   "LLORABIN"                      8 bytes, the magic
//   offset 8   uint32 little-endian version    currently 1
//   offset 12  uint32 little-endian H          header length in bytes
//   offset 16  H bytes of UTF-8 JSON           {"config": <HF-style config>, "dtype": "BF16",
//                                               "tensors": [{"name", "dtype", "shape",
//                                                            "offset", "nbytes"}, ...]}
//   then the tensor data: tensor i starts at the first multiple of 4096 at or after the end
//   of tensor i-1 (tensor 0: after the header), zero padding in between, and the file ends
//   exactly where the last tensor ends (no padding after it). The writer pads the header
//   with spaces so that 16 + H is itself a multiple of 4096.
//
// "offset" is an absolute file offset. Every tensor has the file's one "dtype" (F32, F16 or
// BF16). The reader checks all of this, so the layout of a valid file is unique.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "model/formats/tensor_source.h"
#include "model/llama_config.h"

namespace ll {

inline constexpr char kBinMagic[8] = {'L', 'L', 'O', 'R', 'A', 'B', 'I', 'N'};
inline constexpr uint32_t kBinVersion = 1;
inline constexpr size_t kBinAlignment = 4096;
inline constexpr size_t kBinPreambleBytes = 16;  // magic + version + header length

// True when the file is readable and starts with the magic.
bool file_has_bin_magic(const std::string& path);

// Opens and validates a .bin; tokenizer_path is the tokenizer.json or tokenizer.model in the
// same directory when one exists. Throws ll::Error naming the file and the fault.
std::unique_ptr<ModelFiles> open_model_bin(const std::string& path);

// Writes `tensors` (in the order given) converted from their own floating dtype to `dtype`
// (F32, F16 or BF16), streaming one chunk at a time so that a 70B model needs no extra
// memory. Throws ll::Error, and leaves no file behind, when a value is NaN/Inf or does not
// fit the target dtype (F16 overflow). Written to a temporary name, flushed and renamed.
void write_model_bin(const std::string& path, const LlamaConfig& config, DType dtype,
                     const std::vector<TensorEntry>& tensors);

// Puts the tokenizer (`tokenizer_path` and the settings files beside it: data/tokenizer_path.h
// tokenizer_files) into the directory of `bin_path`, where open_model_bin finds it; files that
// exist there already are kept. Returns what was done, for the tool's output line ("" path:
// "none in the source").
std::string place_tokenizer_beside_bin(const std::string& bin_path,
                                       const std::string& tokenizer_path);

}  // namespace ll
