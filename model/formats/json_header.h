#pragma once
// Parsing the JSON header of a model file (safetensors, .bin) as untrusted bytes: UTF-8 is
// checked first, and keys given twice in one object are an error instead of being silently
// collapsed (a tensor listed twice must not hide which data block is meant).
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace ll {

// Returns the offset of the first byte that breaks UTF-8 (overlong forms, surrogates and
// code points above U+10FFFF included), or `size` when all `size` bytes are valid.
size_t find_invalid_utf8(const uint8_t* bytes, size_t size);

// Parse `size` bytes as a JSON document. Throws ll::Error starting with `path` and naming
// `what` (e.g. "safetensors header") for bad UTF-8, invalid JSON and duplicate keys.
nlohmann::json parse_json_header(const uint8_t* bytes, size_t size, const std::string& path,
                                 const char* what);

// The "shape" of tensor `tensor` from an untrusted header: a list of non-negative integers
// whose product, counting zeros as one, stays below 2^60, so that element and byte counts
// (and TensorEntry::numel, in any order) cannot overflow. Throws ll::Error naming `path`.
std::vector<int64_t> parse_shape(const nlohmann::json* shape, const std::string& path,
                                 const std::string& tensor);

}  // namespace ll
