#include "model/formats/safetensors.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <set>
#include <utility>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/atomic_file.h"
#include "common/error.h"
#include "model/formats/json_header.h"

namespace ll {
namespace {

using nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = 100u * 1000u * 1000u;  // the safetensors limit (100 MB)

// "[4096, 32000]" for messages.
std::string shape_str(const std::vector<int64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

uint64_t read_le64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

// A JSON value that must be a non-negative integer (shape dims, offsets).
uint64_t non_negative_int(const json& v, const std::string& path, const std::string& tensor,
                          const char* what) {
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer()) {
    LL_CHECK(v.get<int64_t>() >= 0, "{}: tensor \"{}\" has a negative {} ({}); the file is damaged",
             path, tensor, what, v.dump());
    return uint64_t(v.get<int64_t>());
  }
  fail("{}: tensor \"{}\" has a non-integer {} ({}); the file is damaged", path, tensor, what,
       v.dump());
}

struct Parsed {
  TensorEntry entry;
  uint64_t begin = 0, end = 0;  // data_offsets, relative to the start of the data section
};

Parsed parse_entry(const std::string& path, const std::string& name, const json& info) {
  LL_CHECK(info.is_object(), "{}: header entry \"{}\" must be an object, found {}", path, name,
           info.type_name());
  Parsed p;
  p.entry.name = name;
  p.entry.file = path;

  auto dtype = info.find("dtype");
  LL_CHECK(dtype != info.end() && dtype->is_string(),
           "{}: tensor \"{}\" has no dtype string; the file is damaged", path, name);
  LL_CHECK(dtype_from_name(dtype->get<std::string>(), &p.entry.dtype),
           "{}: tensor \"{}\" has unsupported dtype \"{}\"; supported: F32 F16 BF16 I32 I64 U16 "
           "U32",
           path, name, dtype->get<std::string>());

  auto shape = info.find("shape");
  p.entry.shape = parse_shape(shape == info.end() ? nullptr : &*shape, path, name);
  const uint64_t nbytes = uint64_t(p.entry.numel()) * dtype_size(p.entry.dtype);  // < 2^63

  auto offsets = info.find("data_offsets");
  LL_CHECK(offsets != info.end() && offsets->is_array() && offsets->size() == 2,
           "{}: tensor \"{}\" needs data_offsets [begin, end]; the file is damaged", path, name);
  p.begin = non_negative_int((*offsets)[0], path, name, "data offset");
  p.end = non_negative_int((*offsets)[1], path, name, "data offset");
  LL_CHECK(p.begin <= p.end,
           "{}: tensor \"{}\" data_offsets [{}, {}] are not sorted (begin after end); the file "
           "is damaged",
           path, name, p.begin, p.end);
  LL_CHECK(p.end - p.begin == nbytes,
           "{}: tensor \"{}\" size mismatch: data_offsets span {} bytes but shape {} of {} needs "
           "{}; the file is damaged",
           path, name, p.end - p.begin, shape_str(p.entry.shape), dtype_name(p.entry.dtype),
           nbytes);
  p.entry.nbytes = size_t(nbytes);
  return p;
}

std::map<std::string, std::string> parse_metadata(const std::string& path, const json& meta) {
  LL_CHECK(meta.is_object(), "{}: \"__metadata__\" must be an object of strings, found {}", path,
           meta.type_name());
  std::map<std::string, std::string> out;
  for (const auto& [key, value] : meta.items()) {
    LL_CHECK(value.is_string(), "{}: \"__metadata__\" value \"{}\" must be a string, found {}",
             path, key, value.dump());
    out[key] = value.get<std::string>();
  }
  return out;
}

}  // namespace

SafetensorsFile read_safetensors(const std::string& path) {
  SafetensorsFile out;
  out.file = MappedFile(path);
  const uint8_t* bytes = out.file.data();
  const size_t size = out.file.size();
  LL_CHECK(size >= 8,
           "{}: file is {} bytes, too small for a safetensors header (8 bytes at least); the "
           "file is truncated or not safetensors",
           path, size);
  const uint64_t header_len = read_le64(bytes);
  LL_CHECK(header_len <= kMaxHeaderBytes,
           "{}: header length {} exceeds the 100 MB safetensors limit; the file is damaged or "
           "not safetensors",
           path, header_len);
  LL_CHECK(header_len <= size - 8,
           "{}: header length {} runs past the end of the file ({} bytes); the file is truncated",
           path, header_len, size);
  const json doc = parse_json_header(bytes + 8, size_t(header_len), path, "safetensors header");
  LL_CHECK(doc.is_object(), "{}: safetensors header must be a JSON object, found {}", path,
           doc.type_name());

  std::vector<Parsed> parsed;
  for (const auto& [name, info] : doc.items()) {
    if (name == "__metadata__") {
      out.metadata = parse_metadata(path, info);
      continue;
    }
    parsed.push_back(parse_entry(path, name, info));
  }

  // Data blocks in file order must tile [0, data size) exactly: no gap, no overlap, nothing
  // after the last one. Zero-byte tensors sort before a block starting at the same offset.
  std::stable_sort(parsed.begin(), parsed.end(), [](const Parsed& a, const Parsed& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  const uint8_t* data = bytes + 8 + header_len;
  const uint64_t data_size = size - 8 - header_len;
  uint64_t expected = 0;
  const std::string* previous = nullptr;
  for (Parsed& p : parsed) {
    LL_CHECK(p.begin >= expected,
             "{}: tensor \"{}\" data_offsets [{}, {}] overlap tensor \"{}\" which ends at {}; the "
             "file is damaged",
             path, p.entry.name, p.begin, p.end, previous ? *previous : "", expected);
    LL_CHECK(p.begin == expected,
             "{}: gap in the data: tensor \"{}\" starts at {} but the previous data ends at {}; "
             "the file is damaged",
             path, p.entry.name, p.begin, expected);
    LL_CHECK(p.end <= data_size,
             "{}: tensor \"{}\" data ends at byte {} of the data section but the file holds only "
             "{}; the file is truncated",
             path, p.entry.name, p.end, data_size);
    p.entry.data = data + p.begin;
    expected = p.end;
    previous = &p.entry.name;
  }
  LL_CHECK(expected == data_size,
           "{}: {} trailing bytes after the last tensor's data; the file is damaged or was "
           "appended to",
           path, data_size - expected);
  out.tensors.reserve(parsed.size());
  for (Parsed& p : parsed) out.tensors.push_back(std::move(p.entry));
  return out;
}

const TensorEntry* SafetensorsFile::find(const std::string& name) const {
  for (const TensorEntry& t : tensors) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

const TensorEntry& SafetensorsFile::at(const std::string& name) const {
  const TensorEntry* t = find(name);
  LL_CHECK(t != nullptr, "{}: missing tensor \"{}\"", file.path(), name);
  return *t;
}

std::vector<float> SafetensorsFile::read_f32(const std::string& name,
                                             const std::vector<int64_t>& expected_shape) const {
  const TensorEntry& t = at(name);
  LL_CHECK(expected_shape.empty() || t.shape == expected_shape,
           "{}: tensor \"{}\" has shape {}, expected {}", file.path(), name, shape_str(t.shape),
           shape_str(expected_shape));
  LL_CHECK(t.dtype == DType::F32 || t.dtype == DType::F16 || t.dtype == DType::BF16,
           "{}: tensor \"{}\" has dtype {}; a floating tensor (F32, F16, BF16) is needed",
           file.path(), name, dtype_name(t.dtype));
  std::vector<float> out(size_t(t.numel()));
  convert_to_f32(t.dtype, t.data, out.data(), out.size());
  return out;
}

std::vector<int32_t> SafetensorsFile::read_i32(const std::string& name) const {
  const TensorEntry& t = at(name);
  const size_t n = size_t(t.numel());
  std::vector<int32_t> out(n);
  auto convert = [&](auto type_tag) {
    using T = decltype(type_tag);
    for (size_t i = 0; i < n; ++i) {
      T v;
      std::memcpy(&v, t.data + i * sizeof(T), sizeof(T));
      LL_CHECK(std::in_range<int32_t>(v), "{}: tensor \"{}\" element {} = {} does not fit in int32",
               file.path(), name, i, v);
      out[i] = int32_t(v);
    }
  };
  switch (t.dtype) {
    case DType::I32:
      convert(int32_t{});
      break;
    case DType::I64:
      convert(int64_t{});
      break;
    case DType::U16:
      convert(uint16_t{});
      break;
    case DType::U32:
      convert(uint32_t{});
      break;
    default:
      fail("{}: tensor \"{}\" has dtype {}; an integer tensor (I32, I64, U16, U32) is needed",
           file.path(), name, dtype_name(t.dtype));
  }
  return out;
}

void write_safetensors(const std::string& path, const std::vector<SafetensorsTensor>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  // ordered_json keeps the tensors in the order given, which is also their data order.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::set<std::string> names;
  uint64_t offset = 0;
  for (const SafetensorsTensor& t : tensors) {
    LL_CHECK(t.name != "__metadata__" && !t.name.empty(), "{}: cannot write a tensor named \"{}\"",
             path, t.name);
    LL_CHECK(names.insert(t.name).second, "{}: cannot write duplicate tensor \"{}\"", path, t.name);
    int64_t numel = 1;
    for (int64_t d : t.shape) {
      LL_CHECK(d >= 0, "{}: cannot write tensor \"{}\" with negative shape {}", path, t.name,
               shape_str(t.shape));
      numel *= d;
    }
    const uint64_t nbytes = uint64_t(numel) * dtype_size(t.dtype);
    LL_CHECK(nbytes == 0 || t.data != nullptr, "{}: tensor \"{}\" has no data", path, t.name);
    header[t.name] = {{"dtype", dtype_name(t.dtype)},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
  }
  std::string text = header.dump();
  text.resize((text.size() + 7) / 8 * 8, ' ');  // keeps the data 8-byte aligned
  uint8_t len_bytes[8];
  for (int i = 0; i < 8; ++i) len_bytes[i] = uint8_t(uint64_t(text.size()) >> (8 * i));

  AtomicFileWriter writer(path);
  writer.write(len_bytes, 8);
  writer.write(text.data(), text.size());
  for (const SafetensorsTensor& t : tensors) {
    int64_t numel = 1;
    for (int64_t d : t.shape) numel *= d;
    writer.write(t.data, size_t(numel) * dtype_size(t.dtype));
  }
  writer.commit();
}

}  // namespace ll
