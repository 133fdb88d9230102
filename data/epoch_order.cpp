#include "data/epoch_order.h"

#include <cstddef>
#include <numeric>
#include <utility>

#include "common/random.h"

namespace ll {

std::vector<int64_t> shuffled_epoch_order(int64_t n, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> order(size_t(n > 0 ? n : 0));
  std::iota(order.begin(), order.end(), int64_t(0));
  SplitMix64 rng{derive_seed(seed, uint64_t(epoch))};
  for (size_t i = order.size(); i-- > 1;) {
    const size_t j = size_t(rng.below(uint64_t(i) + 1));
    std::swap(order[i], order[j]);
  }
  return order;
}

}  // namespace ll
