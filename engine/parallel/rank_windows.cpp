#include "engine/parallel/rank_windows.h"

#include "common/error.h"

namespace ll::dist {

RankWindows::RankWindows(int world_size, int64_t grad_accum)
    : world_size_(world_size), grad_accum_(grad_accum) {
  LL_CHECK(world_size_ >= 1, "rank windows: the world size must be at least 1, got {}",
           world_size_);
  LL_CHECK(grad_accum_ >= 1, "rank windows: gradient accumulation must be at least 1, got {}",
           grad_accum_);
}

int64_t RankWindows::read_index(int64_t step, int rank, int64_t micro) const {
  LL_CHECK(step >= 0, "rank windows: step {} is negative", step);
  LL_CHECK(rank >= 0 && rank < world_size_, "rank windows: rank {} is outside [0, {})", rank,
           world_size_);
  LL_CHECK(micro >= 0 && micro < grad_accum_,
           "rank windows: micro-batch {} is outside [0, {}) (gradient accumulation {})", micro,
           grad_accum_, grad_accum_);
  return step * reads_per_step() + rank * grad_accum_ + micro;
}

RankRead RankWindows::rank_read(int64_t read) const {
  LL_CHECK(read >= 0, "rank windows: read index {} is negative", read);
  const int64_t in_step = read % reads_per_step();
  return {read / reads_per_step(), int(in_step / grad_accum_), in_step % grad_accum_};
}

int64_t RankWindows::single_process_read_index(int64_t step, int64_t micro) const {
  LL_CHECK(step >= 0, "rank windows: step {} is negative", step);
  LL_CHECK(micro >= 0 && micro < reads_per_step(),
           "rank windows: micro-batch {} of the single process is outside [0, {})", micro,
           reads_per_step());
  return step * reads_per_step() + micro;
}

int64_t RankWindows::reads_before_step(int64_t step) const {
  LL_CHECK(step >= 0, "rank windows: step {} is negative", step);
  return step * reads_per_step();
}

int64_t RankWindows::window(int64_t step, int rank, int64_t micro, int64_t windows_per_epoch,
                            const std::function<int64_t(const LoaderPosition&)>& window_at) const {
  return window_at(loader_position(read_index(step, rank, micro), windows_per_epoch));
}

LoaderPosition loader_position(int64_t read, int64_t windows_per_epoch) {
  LL_CHECK(windows_per_epoch >= 1, "rank windows: an epoch must hold at least one window, got {}",
           windows_per_epoch);
  LL_CHECK(read >= 0, "rank windows: read index {} is negative", read);
  return {read / windows_per_epoch, read % windows_per_epoch};
}

int64_t read_of_position(const LoaderPosition& position, int64_t windows_per_epoch) {
  LL_CHECK(windows_per_epoch >= 1, "rank windows: an epoch must hold at least one window, got {}",
           windows_per_epoch);
  LL_CHECK(position.epoch >= 0 && position.index >= 0 && position.index < windows_per_epoch,
           "rank windows: loader position (epoch {}, window {}) is outside an epoch of {} windows",
           position.epoch, position.index, windows_per_epoch);
  return position.epoch * windows_per_epoch + position.index;
}

}  // namespace ll::dist
