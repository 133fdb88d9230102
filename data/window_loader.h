#pragma once
// Training windows of N tokens from one or more token files, in a random order fixed by the
// seed or in file order. Window k of file f is tokens [k*N, (k+1)*N) of that file (windows
// never cross a file boundary; a file's tail shorter than N is not used). The windows of all
// files are numbered 0..W-1 in file order; an epoch visits each exactly once. With shuffle,
// epoch e visits them in the order of a Fisher-Yates permutation driven by SplitMix64 seeded
// from (seed, e), so the order depends only on the seed and the epoch (never on how the run
// was split by checkpoints). The loader's position is (epoch, index within the epoch).
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/token_file.h"

namespace ll {

struct LoaderPosition {
  int64_t epoch = 0;  // completed passes over the data
  int64_t index = 0;  // next window within this epoch's order, in [0, windows_per_epoch)
  bool operator==(const LoaderPosition&) const = default;
};

class WindowLoader {
 public:
  // `paths`: token files or directories (every regular file in a directory, sorted by name,
  // non-recursive). Throws ll::Error when there is no file, when the data holds fewer than
  // window_tokens tokens (the message gives the token count, -ctx and what to do), or when a
  // file is damaged or holds ids >= vocab_size (TokenFile::open checks).
  WindowLoader(const std::vector<std::string>& paths, TokenFileFormat format, int64_t vocab_size,
               int64_t window_tokens, bool shuffle, uint64_t seed);

  int64_t window_tokens() const { return window_tokens_; }
  int64_t windows_per_epoch() const { return int64_t(windows_.size()); }
  int64_t total_tokens() const { return total_tokens_; }  // over all files
  const LoaderPosition& position() const { return position_; }
  // Throws ll::Error when index is outside [0, windows_per_epoch) or epoch < 0.
  void seek(const LoaderPosition& position);

  // The window at the current position (window_tokens ids); advances the position, rolling
  // into the next epoch after the last window.
  std::vector<int32_t> next();

  // Which window (global number, 0..W-1) the position's epoch order puts at its index.
  int64_t window_at(const LoaderPosition& position) const;

 private:
  struct WindowRef {
    int32_t file;
    int64_t start;  // first token
  };
  std::vector<TokenFile> files_;
  std::vector<WindowRef> windows_;
  int64_t window_tokens_ = 0;
  int64_t total_tokens_ = 0;
  bool shuffle_ = true;
  uint64_t seed_ = 0;
  LoaderPosition position_;
  // The permutation of the current epoch (empty without shuffle), rebuilt when the epoch changes.
  mutable int64_t order_epoch_ = -1;
  mutable std::vector<int64_t> order_;
  const std::vector<int64_t>& epoch_order(int64_t epoch) const;
};

}  // namespace ll
