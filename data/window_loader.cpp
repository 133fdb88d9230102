#include "data/window_loader.h"

#include <fmt/ranges.h>

#include <algorithm>
#include <filesystem>
#include <system_error>
#include <utility>

#include "common/error.h"
#include "data/epoch_order.h"

namespace ll {

namespace {

namespace fs = std::filesystem;

// The token files a path names: itself, or every regular file directly inside a directory,
// sorted by name.
std::vector<std::string> expand_path(const std::string& path) {
  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);
  LL_CHECK(!ec && fs::exists(status),
           "training data {}: no such file or directory; pass token files made by ./tokenize "
           "(or raw uint16 .bin files) or a directory holding them",
           path);
  if (!fs::is_directory(status)) return {path};

  std::vector<std::string> files;
  fs::directory_iterator it(path, ec);
  LL_CHECK(!ec, "training data {}: cannot list the directory: {}", path, ec.message());
  for (const fs::directory_iterator end; it != end; it.increment(ec)) {
    LL_CHECK(!ec, "training data {}: cannot list the directory: {}", path, ec.message());
    std::error_code entry_ec;
    if (it->is_regular_file(entry_ec)) files.push_back(it->path().string());
  }
  LL_CHECK(!ec, "training data {}: cannot list the directory: {}", path, ec.message());
  LL_CHECK(!files.empty(),
           "training data {}: the directory holds no files (subdirectories are not read); put "
           "the token shards made by ./tokenize directly in it",
           path);
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace

WindowLoader::WindowLoader(const std::vector<std::string>& paths, TokenFileFormat format,
                           int64_t vocab_size, int64_t window_tokens, bool shuffle, uint64_t seed)
    : window_tokens_(window_tokens), shuffle_(shuffle), seed_(seed) {
  LL_CHECK(!paths.empty(), "no training data given; pass token files or a directory of them");
  LL_CHECK(window_tokens > 0, "the training window (-ctx) must be at least 1 token, got {}",
           window_tokens);

  std::vector<std::string> file_paths;
  for (const std::string& path : paths) {
    for (std::string& file : expand_path(path)) file_paths.push_back(std::move(file));
  }
  LL_CHECK(file_paths.size() <= size_t(INT32_MAX), "too many training files ({})",
           file_paths.size());

  int64_t longest = 0;
  for (const std::string& file : file_paths) {
    TokenFile tf = TokenFile::open(file, format, vocab_size);
    const int32_t index = int32_t(files_.size());
    const int64_t n_windows = tf.size() / window_tokens;
    for (int64_t k = 0; k < n_windows; ++k) windows_.push_back({index, k * window_tokens});
    total_tokens_ += tf.size();
    longest = std::max(longest, tf.size());
    files_.push_back(std::move(tf));
  }

  if (windows_.empty()) {
    const std::string where =
        fmt::format("{}{}", fmt::join(paths, ", "),
                    files_.size() > 1 ? fmt::format(" ({} files)", files_.size()) : "");
    const std::string at_most = longest > 0 ? fmt::format(" (at most {})", longest) : "";
    if (total_tokens_ < window_tokens) {
      fail(
          "training data {} holds {} tokens, fewer than one training window of -ctx {} "
          "tokens; use a smaller -ctx{} or more data",
          where, total_tokens_, window_tokens, at_most);
    }
    fail(
        "training data {} holds {} tokens in all, but no file holds a whole training window of "
        "-ctx {} tokens (windows do not cross files; the longest file has {} tokens); use a "
        "smaller -ctx{} or more data (longer files)",
        where, total_tokens_, window_tokens, longest, at_most);
  }
}

const std::vector<int64_t>& WindowLoader::epoch_order(int64_t epoch) const {
  if (!shuffle_) {
    order_.clear();
    order_epoch_ = -1;
    return order_;
  }
  if (order_epoch_ == epoch && order_.size() == windows_.size()) return order_;
  // Fixed by (seed, epoch) alone, so a resumed run sees the same windows as an uninterrupted one.
  order_ = shuffled_epoch_order(windows_per_epoch(), seed_, epoch);
  order_epoch_ = epoch;
  return order_;
}

int64_t WindowLoader::window_at(const LoaderPosition& position) const {
  LL_CHECK(position.epoch >= 0 && position.index >= 0 && position.index < windows_per_epoch(),
           "data loader position (epoch {}, window {}) is out of range: the data has {} windows "
           "of {} tokens per epoch; was the checkpoint made with other data or another -ctx?",
           position.epoch, position.index, windows_per_epoch(), window_tokens_);
  if (!shuffle_) return position.index;
  return epoch_order(position.epoch)[size_t(position.index)];
}

void WindowLoader::seek(const LoaderPosition& position) {
  window_at(position);  // validates
  position_ = position;
}

std::vector<int32_t> WindowLoader::next() {
  const WindowRef& w = windows_[size_t(window_at(position_))];
  std::vector<int32_t> tokens = files_[size_t(w.file)].read(w.start, window_tokens_);
  if (++position_.index == windows_per_epoch()) {
    position_.index = 0;
    ++position_.epoch;
  }
  return tokens;
}

}  // namespace ll
