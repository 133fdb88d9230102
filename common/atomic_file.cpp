#include "common/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/error.h"

namespace ll {

AtomicFileWriter::AtomicFileWriter(std::string path)
    : path_(std::move(path)), tmp_path_(path_ + ".tmp." + std::to_string(::getpid())) {
  file_ = std::fopen(tmp_path_.c_str(), "wb");
  LL_CHECK(file_ != nullptr, "{}: cannot create: {}", tmp_path_, std::strerror(errno));
}

AtomicFileWriter::~AtomicFileWriter() {
  if (file_ != nullptr) {
    std::fclose(file_);
    std::remove(tmp_path_.c_str());
  }
}

void AtomicFileWriter::write(const void* data, size_t bytes) {
  LL_CHECK(file_ != nullptr, "{}: write after commit", path_);
  if (bytes == 0) return;
  LL_CHECK(std::fwrite(data, 1, bytes, file_) == bytes, "{}: write failed: {}", tmp_path_,
           std::strerror(errno));
}

void AtomicFileWriter::commit() {
  LL_CHECK(file_ != nullptr, "{}: committed twice", path_);
  bool ok = std::fflush(file_) == 0 && ::fsync(::fileno(file_)) == 0;
  ok = (std::fclose(file_) == 0) && ok;
  file_ = nullptr;
  if (!ok || std::rename(tmp_path_.c_str(), path_.c_str()) != 0) {
    int err = errno;
    std::remove(tmp_path_.c_str());
    fail("{}: cannot write: {}", path_, std::strerror(err));
  }
}

void fsync_directory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  LL_CHECK(fd >= 0, "{}: cannot open directory to flush it: {}", dir, std::strerror(errno));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  LL_CHECK(rc == 0, "{}: cannot flush directory: {}", dir, std::strerror(err));
}

}  // namespace ll
