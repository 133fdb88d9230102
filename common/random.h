#pragma once
// SplitMix64: the engine's deterministic random stream (data order, LoRA initialisation).
// Its whole state is one integer, so checkpoints and resumed runs reproduce it exactly.
#include <cstdint>

namespace ll {

struct SplitMix64 {
  uint64_t state = 0;

  uint64_t next() {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, 1) with 53 random bits.
  double uniform() { return double(next() >> 11) * 0x1.0p-53; }
  // Uniform integer in [0, n), n >= 1 (rejection sampling: no modulo bias).
  uint64_t below(uint64_t n) {
    const uint64_t limit = ~uint64_t(0) - (~uint64_t(0) % n);
    uint64_t x;
    do x = next();
    while (x >= limit);
    return x % n;
  }
};

// A seed for a sub-stream (e.g. epoch e of the data order), mixed so that neighbouring
// (seed, stream) pairs give unrelated sequences.
inline uint64_t derive_seed(uint64_t seed, uint64_t stream) {
  SplitMix64 r{seed ^ (stream * 0xD1B54A32D192ED03ull)};
  return r.next();
}

}  // namespace ll
