#pragma once
// Which training windows each rank of a data-parallel run reads.
//
// Every rank walks the same shared stream of reads: read i is entry i % n of epoch i / n's
// order (n windows per epoch; the order is the loader's seeded permutation, the same on every
// rank, or the identity with --shuffle off). With W ranks and gradient accumulation k (per
// rank), step s consumes the W*k reads [s*W*k, (s+1)*W*k), and rank r takes the contiguous
// block
//     reads [s*W*k + r*k, s*W*k + (r+1)*k),  micro-batch j = read s*W*k + r*k + j.
// Contiguous blocks (rather than interleaving r, r+W, ...) let a rank seek its loader once per
// step and read k windows with next(), which already rolls over epoch boundaries.
//
// Equivalence: one process with accumulation W*k reads, in its micro-batch m of step s, read
// s*W*k + m. The map (r, j) -> m = r*k + j is a bijection from the ranks' micro-batches of a
// step onto [0, W*k), so the W ranks together read exactly the single process's windows of
// that step, each once (for any epoch order: both sides look windows up through the same
// read index). With loss scale 1/(k * labels) per micro-batch on each rank and the optimizer
// taking the mean over ranks of the summed gradients (engine/parallel/sharded_optimizer.h), the step's
// gradient is (1/W) sum_r sum_j g_rj / (k L) = sum_m g_m / (W k L): the single process's. Only
// the fp32 summation order differs (W partial sums added by the reduce-scatter instead of one
// running sum), so the two agree to rounding, not to the bit.
//
// A checkpoint after step s records the shared position (s+1)*W*k reads; resuming with another
// world size W' continues from that read (the new step boundaries follow W'*k).
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
