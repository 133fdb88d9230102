#include "data/sft_loader.h"

#include <utility>

#include "common/error.h"
#include "data/epoch_order.h"

namespace ll {

SftLoader::SftLoader(SftDataset dataset, bool shuffle, uint64_t seed)
    : dataset_(std::move(dataset)), shuffle_(shuffle), seed_(seed) {
  LL_CHECK(!dataset_.examples.empty(), "no SFT examples to train on");
}

int64_t SftLoader::example_at(const LoaderPosition& position) const {
  LL_CHECK(position.epoch >= 0 && position.index >= 0 && position.index < examples_per_epoch(),
           "data loader position (epoch {}, example {}) is out of range: the SFT data has {} "
           "examples per epoch; was the checkpoint made with another file or another -ctx?",
           position.epoch, position.index, examples_per_epoch());
  if (!shuffle_) return position.index;
  if (order_epoch_ != position.epoch) {
    order_ = shuffled_epoch_order(examples_per_epoch(), seed_, position.epoch);
    order_epoch_ = position.epoch;
  }
  return order_[size_t(position.index)];
}

void SftLoader::seek(const LoaderPosition& position) {
  example_at(position);  // validates
  position_ = position;
}

const SftExample& SftLoader::next() {
  const SftExample& ex = dataset_.examples[size_t(example_at(position_))];
  if (++position_.index == examples_per_epoch()) {
    position_.index = 0;
    ++position_.epoch;
  }
  return ex;
}

}  // namespace ll
