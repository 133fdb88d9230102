#include "model/formats/bin_format.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <set>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/atomic_file.h"
#include "common/error.h"
#include "common/mapped_file.h"
#include "data/tokenizer_path.h"
#include "model/formats/json_header.h"

namespace ll {
namespace {

using nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = 100u * 1000u * 1000u;
constexpr size_t kChunkElems = size_t(1) << 20;  // conversion chunk when writing

uint64_t align_up(uint64_t v) { return (v + kBinAlignment - 1) / kBinAlignment * kBinAlignment; }

uint32_t read_le32(const uint8_t* p) {
  return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 | uint32_t(p[3]) << 24;
}

void put_le32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = uint8_t(v >> (8 * i));
}

bool is_float_dtype(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; }

uint64_t header_uint(const json& t, const char* key, const std::string& path,
                     const std::string& name) {
  auto v = t.find(key);
  LL_CHECK(v != t.end() &&
               (v->is_number_unsigned() || (v->is_number_integer() && v->get<int64_t>() >= 0)),
           "{}: tensor \"{}\" needs a non-negative integer \"{}\"; the file is damaged", path, name,
           key);
  return v->get<uint64_t>();
}

// One header entry -> a TensorEntry with data pointing into the map (bounds checked by caller).
TensorEntry parse_tensor(const json& t, DType file_dtype, const std::string& path,
                         uint64_t* offset) {
  LL_CHECK(t.is_object(), "{}: header tensor entries must be objects, found {}", path,
           t.type_name());
  auto name = t.find("name");
  LL_CHECK(name != t.end() && name->is_string() && !name->get<std::string>().empty(),
           "{}: a header tensor entry has no name; the file is damaged", path);
  TensorEntry e;
  e.name = name->get<std::string>();
  e.file = path;
  auto dtype = t.find("dtype");
  LL_CHECK(dtype != t.end() && dtype->is_string() &&
               dtype_from_name(dtype->get<std::string>(), &e.dtype) && e.dtype == file_dtype,
           "{}: tensor \"{}\" has dtype {} but the file's dtype is {}; the file is damaged", path,
           e.name, dtype != t.end() ? dtype->dump() : "nothing", dtype_name(file_dtype));
  auto shape = t.find("shape");
  e.shape = parse_shape(shape == t.end() ? nullptr : &*shape, path, e.name);
  const uint64_t numel = uint64_t(e.numel());  // < 2^60, so the byte count cannot overflow
  *offset = header_uint(t, "offset", path, e.name);
  const uint64_t nbytes = header_uint(t, "nbytes", path, e.name);
  LL_CHECK(nbytes == numel * dtype_size(e.dtype),
           "{}: tensor \"{}\" size mismatch: nbytes {} but shape {} of {} needs {}; the file is "
           "damaged",
           path, e.name, nbytes, shape->dump(), dtype_name(e.dtype), numel * dtype_size(e.dtype));
  e.nbytes = size_t(nbytes);
  return e;
}

}  // namespace

bool file_has_bin_magic(const std::string& path) {
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) return false;
  char magic[8];
  const bool ok = std::fread(magic, 1, 8, f) == 8 && std::memcmp(magic, kBinMagic, 8) == 0;
  std::fclose(f);
  return ok;
}

std::unique_ptr<ModelFiles> open_model_bin(const std::string& path) {
  MappedFile file(path);
  const uint8_t* bytes = file.data();
  const size_t size = file.size();
  LL_CHECK(size >= 8 && std::memcmp(bytes, kBinMagic, 8) == 0,
           "{}: bad magic: not a .bin model (it starts with \"LLORABIN\"); make one with "
           "./convert",
           path);
  LL_CHECK(size >= kBinPreambleBytes,
           "{}: file is {} bytes, shorter than the 16-byte .bin preamble; the file is truncated",
           path, size);
  const uint32_t version = read_le32(bytes + 8);
  LL_CHECK(version == kBinVersion,
           "{}: .bin format version {} is not supported (this build reads version {}); "
           "re-create the file with ./convert",
           path, version, kBinVersion);
  const uint64_t header_len = read_le32(bytes + 12);
  LL_CHECK(header_len <= kMaxHeaderBytes,
           "{}: header length {} exceeds the 100 MB limit; the file is damaged", path, header_len);
  LL_CHECK(kBinPreambleBytes + header_len <= size,
           "{}: header length {} runs past the end of the file ({} bytes); the file is truncated",
           path, header_len, size);
  const json doc =
      parse_json_header(bytes + kBinPreambleBytes, size_t(header_len), path, ".bin header");
  LL_CHECK(doc.is_object() && doc.contains("config") && doc.contains("dtype") &&
               doc.contains("tensors") && doc["tensors"].is_array(),
           "{}: .bin header must be an object with \"config\", \"dtype\" and a \"tensors\" "
           "list; the file is damaged",
           path);
  const json& dtype_json = doc["dtype"];
  DType file_dtype = DType::F32;
  LL_CHECK(dtype_json.is_string() && dtype_from_name(dtype_json.get<std::string>(), &file_dtype) &&
               is_float_dtype(file_dtype),
           "{}: unsupported dtype {} in the .bin header (F32, F16 or BF16)", path,
           dtype_json.dump());

  auto model = std::make_unique<ModelFiles>();
  model->path = path;
  model->config = llama_config_from_json(doc["config"], path + " (header config)");

  // Tensors tile the data in header order, each at the first aligned offset after the
  // previous one, so any gap, overlap, reordering or stray byte is detected.
  uint64_t end = kBinPreambleBytes + header_len;
  std::vector<TensorEntry> entries;
  for (const json& t : doc["tensors"]) {
    uint64_t offset = 0;
    TensorEntry e = parse_tensor(t, file_dtype, path, &offset);
    LL_CHECK(offset % kBinAlignment == 0,
             "{}: tensor \"{}\" offset {} is not aligned to {} bytes; the file is damaged", path,
             e.name, offset, kBinAlignment);
    LL_CHECK(offset >= end,
             "{}: tensor \"{}\" offset {} overlaps the data before it (which ends at {}): "
             "offsets not sorted; the file is damaged",
             path, e.name, offset, end);
    LL_CHECK(offset == align_up(end),
             "{}: gap before tensor \"{}\": it starts at {} but should start at {}; the file is "
             "damaged",
             path, e.name, offset, align_up(end));
    LL_CHECK(offset <= size && e.nbytes <= size - offset,
             "{}: tensor \"{}\" [{}, {}) runs past the end of the file ({} bytes); the file is "
             "truncated",
             path, e.name, offset, offset + e.nbytes, size);
    e.data = bytes + offset;
    end = offset + e.nbytes;
    entries.push_back(std::move(e));
  }
  LL_CHECK(size == end,
           "{}: {} trailing bytes after the last tensor (file is {} bytes, data ends at {}); the "
           "file is damaged",
           path, size - end, size, end);

  model->tensors.keep(std::move(file));  // entry data stays valid: the mapping does not move
  for (TensorEntry& e : entries) model->tensors.add(std::move(e));
  model->tokenizer_path = tokenizer_in_dir(std::filesystem::path(path).parent_path().string());
  return model;
}

std::string place_tokenizer_beside_bin(const std::string& bin_path,
                                       const std::string& tokenizer_path) {
  if (tokenizer_path.empty()) return "none in the source (no tokenizer.json or tokenizer.model)";
  namespace fs = std::filesystem;
  const fs::path dir = fs::path(bin_path).parent_path();
  std::vector<std::string> copied, kept;
  for (const TokenizerFile& file : tokenizer_files(tokenizer_path)) {
    const fs::path dest = (dir.empty() ? fs::path(".") : dir) / file.name;
    std::error_code ec;
    if (fs::exists(dest, ec)) {
      kept.push_back(dest.string());
      continue;
    }
    LL_CHECK(fs::copy_file(file.path, dest, ec), "{}: cannot copy the tokenizer to {}: {}",
             file.path, dest.string(), ec.message());
    copied.push_back(dest.string());
  }
  std::string note;
  if (!copied.empty()) note = fmt::format("copied to {}", fmt::join(copied, ", "));
  if (!kept.empty()) {
    note +=
        fmt::format("{}{} already exists, kept", note.empty() ? "" : "; ", fmt::join(kept, ", "));
  }
  return note;
}

void write_model_bin(const std::string& path, const LlamaConfig& config, DType dtype,
                     const std::vector<TensorEntry>& tensors) {
  LL_CHECK(is_float_dtype(dtype), "{}: cannot write a .bin with dtype {} (F32, F16 or BF16)", path,
           dtype_name(dtype));
  validate_llama_config(config, path);
  std::set<std::string> names;
  for (const TensorEntry& t : tensors) {
    LL_CHECK(!t.name.empty() && names.insert(t.name).second,
             "{}: cannot write duplicate or unnamed tensor \"{}\"", path, t.name);
    LL_CHECK(is_float_dtype(t.dtype),
             "{}: tensor \"{}\" has dtype {}; only F32, F16 and BF16 "
             "weights go into a .bin",
             t.file, t.name, dtype_name(t.dtype));
    LL_CHECK(t.nbytes == size_t(t.numel()) * dtype_size(t.dtype) && (t.nbytes == 0 || t.data),
             "{}: tensor \"{}\" has {} bytes of data for shape [{}]", t.file, t.name, t.nbytes,
             fmt::join(t.shape, ", "));
  }

  // The header is padded with spaces up to the first tensor's aligned offset; offsets depend
  // on the header's length, so grow the data start until the header fits before it.
  std::vector<uint64_t> offsets(tensors.size());
  std::string text;
  for (uint64_t data_start = kBinAlignment;;) {
    nlohmann::ordered_json list = nlohmann::ordered_json::array();
    uint64_t end = data_start;
    for (size_t i = 0; i < tensors.size(); ++i) {
      const uint64_t nbytes = uint64_t(tensors[i].numel()) * dtype_size(dtype);
      offsets[i] = align_up(end);
      list.push_back({{"name", tensors[i].name},
                      {"dtype", dtype_name(dtype)},
                      {"shape", tensors[i].shape},
                      {"offset", offsets[i]},
                      {"nbytes", nbytes}});
      end = offsets[i] + nbytes;
    }
    nlohmann::ordered_json header = nlohmann::ordered_json::object();
    header["config"] = llama_config_to_json(config);
    header["dtype"] = dtype_name(dtype);
    header["tensors"] = std::move(list);
    text = header.dump();
    if (kBinPreambleBytes + text.size() <= data_start) {
      text.resize(data_start - kBinPreambleBytes, ' ');
      break;
    }
    data_start = align_up(kBinPreambleBytes + text.size());
  }
  LL_CHECK(text.size() <= kMaxHeaderBytes && text.size() <= UINT32_MAX,
           "{}: header of {} bytes is too large", path, text.size());

  AtomicFileWriter writer(path);
  uint8_t preamble[kBinPreambleBytes];
  std::memcpy(preamble, kBinMagic, 8);
  put_le32(preamble + 8, kBinVersion);
  put_le32(preamble + 12, uint32_t(text.size()));
  writer.write(preamble, sizeof(preamble));
  writer.write(text.data(), text.size());
  uint64_t pos = kBinPreambleBytes + text.size();

  const std::vector<uint8_t> zeros(kBinAlignment, 0);
  std::vector<float> f32(kChunkElems);      // [chunk] source values as fp32
  std::vector<uint16_t> half(kChunkElems);  // [chunk] values in the 16-bit target dtype
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorEntry& t = tensors[i];
    writer.write(zeros.data(), size_t(offsets[i] - pos));
    const size_t n = size_t(t.numel());
    const size_t src_size = dtype_size(t.dtype);
    for (size_t begin = 0; begin < n; begin += kChunkElems) {
      const size_t count = std::min(kChunkElems, n - begin);
      const uint8_t* src = t.data + begin * src_size;
      convert_to_f32(t.dtype, src, f32.data(), count);
      int64_t bad = -1;  // first element that is not finite (in the source or after rounding)
#pragma omp parallel for reduction(max : bad) if (count > 65536)
      for (int64_t k = 0; k < int64_t(count); ++k) {
        float v = f32[size_t(k)];
        if (dtype == DType::F16) {
          half[size_t(k)] = f32_to_f16(v);
          v = f16_to_f32(half[size_t(k)]);
        } else if (dtype == DType::BF16) {
          half[size_t(k)] = f32_to_bf16(v);
          v = bf16_to_f32(half[size_t(k)]);
        }
        if (!std::isfinite(v)) bad = std::max(bad, int64_t(count) - k);  // max -> first index
      }
      if (bad >= 0) {
        const size_t at = begin + (count - size_t(bad));
        const float v = f32[at - begin];
        LL_CHECK(!std::isfinite(v),
                 "{}: tensor \"{}\" element {} = {} does not fit in {}; convert with --dtype bf16 "
                 "or f32",
                 t.file, t.name, at, v, dtype_name(dtype));
        fail("{}: tensor \"{}\" holds {} at element {}; the weights are damaged", t.file, t.name,
             std::isnan(v) ? "NaN" : "Inf", at);
      }
      if (dtype == t.dtype) {
        writer.write(src, count * src_size);  // same dtype: the exact source bits
      } else if (dtype == DType::F32) {
        writer.write(f32.data(), count * 4);
      } else {
        writer.write(half.data(), count * 2);
      }
    }
    pos = offsets[i] + n * dtype_size(dtype);
  }
  writer.commit();
}

}  // namespace ll
