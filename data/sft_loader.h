#pragma once
// SFT examples in training order: an epoch visits every example once, in the Fisher-Yates
// order of data/epoch_order.h seeded from (seed, epoch) like the window loader, or in file
// order without shuffle. The position is a LoaderPosition {epoch, index}, so checkpoints and
// bit-exact resume work as for windows.
#include <cstdint>
#include <vector>

#include "data/sft_dataset.h"
#include "data/window_loader.h"  // LoaderPosition

namespace ll {

class SftLoader {
 public:
  // Throws ll::Error when the dataset has no example.
  SftLoader(SftDataset dataset, bool shuffle, uint64_t seed);

  const SftDataset& dataset() const { return dataset_; }
  int64_t examples_per_epoch() const { return int64_t(dataset_.examples.size()); }
  const LoaderPosition& position() const { return position_; }
  // Throws ll::Error when index is outside [0, examples_per_epoch) or epoch < 0.
  void seek(const LoaderPosition& position);

  // The example at the current position; advances the position, rolling into the next epoch
  // after the last example. The reference stays valid while the loader lives.
  const SftExample& next();

  // Which example (index into dataset().examples) the position's epoch order puts at its index.
  int64_t example_at(const LoaderPosition& position) const;

 private:
  SftDataset dataset_;
  bool shuffle_ = true;
  uint64_t seed_ = 0;
  LoaderPosition position_;
  // The permutation of one epoch, rebuilt when another epoch is asked for.
  mutable int64_t order_epoch_ = -1;
  mutable std::vector<int64_t> order_;
};

}  // namespace ll
