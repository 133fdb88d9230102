#pragma once
// The safetensors format (8-byte little-endian header length, UTF-8 JSON header, raw data),
// read with every rule of DESIGN.md section 5 validated, and written atomically.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "common/mapped_file.h"
#include "model/formats/tensor_source.h"

namespace ll {

struct SafetensorsFile {
  MappedFile file;
  std::vector<TensorEntry> tensors;             // in file order; data points into `file`
  std::map<std::string, std::string> metadata;  // the optional "__metadata__" object

  const TensorEntry& at(const std::string& name) const;  // throws naming file and tensor
  const TensorEntry* find(const std::string& name) const;
  // Copy a floating tensor out as fp32 (converting F16/BF16), checking its shape when given.
  std::vector<float> read_f32(const std::string& name,
                              const std::vector<int64_t>& expected_shape = {}) const;
  // Copy an integer tensor (I32/I64/U16/U32) out as int32.
  std::vector<int32_t> read_i32(const std::string& name) const;
};

// Throws ll::Error whose message starts with the path and names the fault.
SafetensorsFile read_safetensors(const std::string& path);

struct SafetensorsTensor {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const void* data = nullptr;  // numel(shape) * dtype_size(dtype) bytes
};

// Tensors are written in the order given (offsets sorted, contiguous), header padded with
// spaces to a multiple of 8 bytes. Written to a temporary name, flushed and renamed.
void write_safetensors(const std::string& path, const std::vector<SafetensorsTensor>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace ll
