#pragma once
// Documents from text files, for tokenization:
//  - a text file (.txt, or any named file that is not .jsonl or a known binary format such as
//    .json/.parquet/.gz): the whole file is one document, bytes unchanged;
//  - .jsonl: one JSON object per line with a string field "text" (RedPajama, The Pile, ...);
//    other fields are ignored, blank lines skipped;
//  - a directory: every .txt and .jsonl file below it, recursively, in sorted path order
//    (so the same tree always gives the same token stream); other files and names starting
//    with '.' are skipped.
// Bad input (a malformed line, a line without "text", a binary file) throws ll::Error naming
// the file and line.
#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

namespace ll {

struct Document {
  std::string text;
  std::string source;  // "path" or "path:line", for messages
};

// The text/.jsonl files the inputs stand for, in order. Throws for a missing input, a known
// binary format, or a directory without any .txt/.jsonl file.
std::vector<std::string> expand_text_inputs(const std::vector<std::string>& inputs);

// Streams the documents of a list of inputs (files or directories), one at a time.
class DocumentReader {
 public:
  explicit DocumentReader(const std::vector<std::string>& inputs);

  // Fills `doc` with the next document; false at the end of the last file.
  bool next(Document& doc);

  const std::vector<std::string>& files() const { return files_; }
  int64_t text_bytes() const { return text_bytes_; }                // document text returned so far
  int64_t input_bytes() const { return input_bytes_; }              // file bytes consumed so far
  int64_t input_bytes_total() const { return input_bytes_total_; }  // of all files

 private:
  bool next_jsonl_line(Document& doc);

  std::vector<std::string> files_;
  size_t next_file_ = 0;
  std::ifstream jsonl_;  // the open .jsonl file, when inside one
  std::string jsonl_path_;
  int64_t line_number_ = 0;
  std::string line_;
  int64_t text_bytes_ = 0;
  int64_t input_bytes_ = 0;
  int64_t input_bytes_total_ = 0;
};

}  // namespace ll
