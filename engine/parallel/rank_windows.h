#pragma once
// Which training windows each rank of a data-parallel run reads. All ranks walk one shared
// stream of reads (the loader's seeded epoch order); with W ranks and per-rank accumulation k,
// step s consumes reads [s*W*k, (s+1)*W*k) and rank r takes the contiguous block
// [s*W*k + r*k, s*W*k + (r+1)*k). Together the ranks read exactly the windows one process with
// accumulation W*k reads in that step, so the two agree up to fp32 summation order. A checkpoint
// records the shared read position, so a resume may change W. Proof:
// docs/subsystems/data-parallel.md.
#include <cstdint>
#include <functional>

#include "data/window_loader.h"

namespace ll::dist {

// Where a read of the shared stream falls: step, rank, micro-batch within the rank's block.
struct RankRead {
  int64_t step = 0;
  int rank = 0;
  int64_t micro = 0;
  bool operator==(const RankRead&) const = default;
};

class RankWindows {
 public:
  // world_size >= 1 ranks, grad_accum >= 1 micro-batches per rank and step; throws ll::Error
  // naming the bad value.
  RankWindows(int world_size, int64_t grad_accum);

  int world_size() const { return world_size_; }
  int64_t grad_accum() const { return grad_accum_; }
  // W*k: reads per optimizer step over all ranks (the global batch in windows).
  int64_t reads_per_step() const { return world_size_ * grad_accum_; }

  // The read index of rank `rank`'s micro-batch `micro` in step `step` (0-based), as above.
  // Throws ll::Error when step < 0, rank outside [0, W) or micro outside [0, k).
  int64_t read_index(int64_t step, int rank, int64_t micro) const;
  // The inverse: which step, rank and micro-batch read `read` (>= 0) belongs to.
  RankRead rank_read(int64_t read) const;
  // The read index of micro-batch m (in [0, W*k)) of step `step` in the equivalent single
  // process with accumulation W*k: step*W*k + m.
  int64_t single_process_read_index(int64_t step, int64_t micro) const;

  // Where rank `rank` starts reading in step `step` (its micro-batch 0); the next k reads are
  // its own.
  int64_t first_read(int64_t step, int rank) const { return read_index(step, rank, 0); }
  // Reads consumed by all ranks before step `step` begins: the shared position to checkpoint.
  int64_t reads_before_step(int64_t step) const;

  // The global window number (0..n-1) of rank `rank`'s micro-batch `micro` in step `step`:
  // loader_position() of its read, looked up in the epoch order by `window_at` (e.g.
  // WindowLoader::window_at).
  int64_t window(int64_t step, int rank, int64_t micro, int64_t windows_per_epoch,
                 const std::function<int64_t(const LoaderPosition&)>& window_at) const;

 private:
  int world_size_ = 1;
  int64_t grad_accum_ = 1;
};

// The loader position of read `read` (>= 0) in a stream of epochs of windows_per_epoch (>= 1)
// windows each: epoch read / n, index read % n. Throws ll::Error on bad values.
LoaderPosition loader_position(int64_t read, int64_t windows_per_epoch);
// The inverse: epoch * n + index (index must lie in [0, n)).
int64_t read_of_position(const LoaderPosition& position, int64_t windows_per_epoch);

}  // namespace ll::dist
