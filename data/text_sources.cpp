#include "data/text_sources.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <iterator>
#include <nlohmann/json.hpp>

#include "common/error.h"

namespace ll {

namespace fs = std::filesystem;

namespace {

enum class TextKind { Txt, Jsonl, Other };

std::string lower_extension(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return char(std::tolower(c)); });
  return ext;
}

// Inside directories only .txt and .jsonl count, so a scan never picks up stray files.
TextKind kind_in_directory(const fs::path& p) {
  const std::string ext = lower_extension(p);
  if (ext == ".txt") return TextKind::Txt;
  if (ext == ".jsonl") return TextKind::Jsonl;
  return TextKind::Other;
}

// A file named on the command line is plain text unless it is .jsonl (e.g. the extension-less
// /usr/share/common-licenses/GPL-3), except for formats that are clearly not text.
TextKind kind_named(const fs::path& p) {
  const std::string ext = lower_extension(p);
  if (ext == ".jsonl") return TextKind::Jsonl;
  for (const char* binary : {".json", ".parquet", ".arrow", ".gz", ".zst", ".bz2", ".xz", ".zip",
                             ".tar", ".bin", ".shard", ".safetensors", ".model", ".npy"}) {
    if (ext == binary) return TextKind::Other;
  }
  return TextKind::Txt;
}

bool is_hidden(const fs::path& p) {
  const std::string name = p.filename().string();
  return !name.empty() && name[0] == '.';
}

std::string read_whole_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  LL_CHECK(in.good(), "{}: cannot open: {}", path, std::strerror(errno));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  LL_CHECK(!in.bad(), "{}: read failed", path);
  return text;
}

}  // namespace

std::vector<std::string> expand_text_inputs(const std::vector<std::string>& inputs) {
  LL_CHECK(!inputs.empty(), "no input files given; pass .txt/.jsonl files or directories");
  std::vector<std::string> files;
  for (const std::string& input : inputs) {
    std::error_code ec;
    const fs::file_status st = fs::status(input, ec);
    LL_CHECK(fs::exists(st), "{}: no such file or directory", input);
    if (fs::is_directory(st)) {
      std::vector<std::string> found;
      for (auto it = fs::recursive_directory_iterator(input, ec),
                end = fs::recursive_directory_iterator();
           it != end; it.increment(ec)) {
        LL_CHECK(!ec, "{}: cannot list: {}", input, ec.message());
        if (is_hidden(it->path())) {
          if (it->is_directory()) it.disable_recursion_pending();
          continue;
        }
        if (it->is_regular_file() && kind_in_directory(it->path()) != TextKind::Other) {
          found.push_back(it->path().string());
        }
      }
      LL_CHECK(ec.value() == 0, "{}: cannot list: {}", input, ec.message());
      LL_CHECK(!found.empty(), "{}: the directory holds no .txt or .jsonl file", input);
      std::sort(found.begin(), found.end());
      files.insert(files.end(), found.begin(), found.end());
    } else {
      LL_CHECK(kind_named(input) != TextKind::Other,
               "{}: unsupported input; expected a text file (one document), a .jsonl file (one "
               "JSON object with a \"text\" field per line) or a directory of them; "
               "decompress or convert other formats first",
               input);
      files.push_back(input);
    }
  }
  return files;
}

DocumentReader::DocumentReader(const std::vector<std::string>& inputs)
    : files_(expand_text_inputs(inputs)) {
  for (const std::string& f : files_) {
    std::error_code ec;
    const auto size = fs::file_size(f, ec);
    if (!ec) input_bytes_total_ += int64_t(size);
  }
}

bool DocumentReader::next(Document& doc) {
  while (true) {
    if (jsonl_.is_open()) {
      if (next_jsonl_line(doc)) return true;
      jsonl_.close();
    }
    if (next_file_ == files_.size()) return false;
    const std::string& path = files_[next_file_++];
    if (kind_named(path) == TextKind::Txt) {
      doc.text = read_whole_file(path);
      // NUL never occurs in text; it means a binary or UTF-16 file that would tokenize to junk.
      const size_t nul = doc.text.find('\0');
      LL_CHECK(nul == std::string::npos,
               "{}: byte {} is NUL, so this is not UTF-8 text (a binary or UTF-16 file?); "
               "convert it to UTF-8 text or leave it out",
               path, nul);
      doc.source = path;
      text_bytes_ += int64_t(doc.text.size());
      input_bytes_ += int64_t(doc.text.size());
      return true;
    }
    jsonl_.clear();
    jsonl_.open(path, std::ios::binary);
    LL_CHECK(jsonl_.is_open(), "{}: cannot open: {}", path, std::strerror(errno));
    jsonl_path_ = path;
    line_number_ = 0;
  }
}

bool DocumentReader::next_jsonl_line(Document& doc) {
  while (std::getline(jsonl_, line_)) {
    ++line_number_;
    input_bytes_ += int64_t(line_.size()) + 1;
    if (line_.find_first_not_of(" \t\r") == std::string::npos) continue;  // blank line
    nlohmann::json obj;
    try {
      obj = nlohmann::json::parse(line_);
    } catch (const nlohmann::json::parse_error& e) {
      fail("{}:{}: malformed JSON ({}); each line of a .jsonl file must be one JSON object",
           jsonl_path_, line_number_, e.what());
    }
    LL_CHECK(obj.is_object(), "{}:{}: expected a JSON object with a \"text\" field, got a {}",
             jsonl_path_, line_number_, obj.type_name());
    auto text = obj.find("text");
    LL_CHECK(text != obj.end(),
             "{}:{}: the object has no \"text\" field; each line must be "
             "{{\"text\": \"...\"}} (other fields are ignored)",
             jsonl_path_, line_number_);
    LL_CHECK(text->is_string(), "{}:{}: the \"text\" field is a {}, expected a string", jsonl_path_,
             line_number_, text->type_name());
    doc.text = text->get<std::string>();
    doc.source = fmt::format("{}:{}", jsonl_path_, line_number_);
    text_bytes_ += int64_t(doc.text.size());
    return true;
  }
  LL_CHECK(!jsonl_.bad(), "{}: read failed after line {}", jsonl_path_, line_number_);
  return false;
}

}  // namespace ll
