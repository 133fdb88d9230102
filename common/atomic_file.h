#pragma once
// Writes that never leave a half-written file under the final name: data goes to
// "<path>.tmp.<pid>", is flushed with fsync, then renamed over <path>.
#include <cstddef>
#include <cstdio>
#include <string>

namespace ll {

class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(std::string path);
  ~AtomicFileWriter();  // removes the temporary file if commit() was not reached
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  void write(const void* data, size_t bytes);
  void commit();  // fsync, close, rename; throws ll::Error on failure

 private:
  std::string path_;
  std::string tmp_path_;
  std::FILE* file_ = nullptr;
};

// fsync of a directory, so that the renames into it survive a crash; throws ll::Error.
void fsync_directory(const std::string& dir);

}  // namespace ll
