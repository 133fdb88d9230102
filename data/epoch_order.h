#pragma once
// The order in which an epoch visits n items (training windows, SFT examples): a Fisher-Yates
// permutation driven by SplitMix64 seeded from (seed, epoch). It depends on nothing else, so a
// resumed run visits the same items as one that never stopped, and every loader shuffles the
// same way.
#include <cstdint>
#include <vector>

namespace ll {

// order[i] = the item visited i-th in `epoch`; a permutation of [0, n). n >= 0, epoch >= 0.
std::vector<int64_t> shuffled_epoch_order(int64_t n, uint64_t seed, int64_t epoch);

}  // namespace ll
