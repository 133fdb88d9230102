#pragma once
// The plan chooses: how much activation offload and which token tile a training run uses, from
// the memory plan (model/memory_plan.h) and the memory the device and the host have. Auto
// takes the least offload, and for it the largest tile, whose plan fits; when nothing fits it
// says so, with the smallest plan's numbers and what would fit (fewer tokens, more GPUs with
// the data-parallel path, a shorter classifier chunk, more host memory).
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "model/memory_plan.h"

namespace ll {

// --offload-activations: auto (when the plan does not fit without), on (every layer's input
// but the last one's), off.
enum class OffloadMode { Auto, On, Off };
OffloadMode parse_offload_mode(std::string_view text);  // throws ll::Error for another word

struct MemoryBudget {
  int64_t device_free = -1;   // bytes the device has free before the run (-1: no limit)
  int64_t device_total = -1;  // the device's size (-1: device_free)
  int64_t host_free = -1;     // host memory for offloaded inputs (-1: no limit)
};

// What a plan may use of the device: its free memory less 5% of its size, for what the plan
// does not count (library handles, small kernel scratch, allocator rounding). -1: no limit.
int64_t usable_device_bytes(const MemoryBudget& budget);

struct ScheduleRequest {
  OffloadMode offload = OffloadMode::Auto;
  int64_t tile_tokens = 0;     // rows per tile; 0: auto (the largest that fits, N: whole)
  bool offload_useful = true;  // false on the CPU backend: its memory is the host's
  // The device bytes of a plan: plan.total() when empty, else e.g. a data-parallel rank's.
  std::function<int64_t(const MemoryPlan&)> device_cost;
};

struct ScheduleChoice {
  MemoryPlan plan;  // the chosen plan; when nothing fits, the smallest one tried
  bool fits = false;
  std::string summary;  // one line: the choice and the memory it needs against what there is
  std::string advice;   // when nothing fits: what would (one suggestion per line)
};

// Tries offload from least to most (auto: 0, then 2 .. L-1 layers, as 1 of more than 2 saves
// nothing) and, for
// each, tiles from the largest (whole, then powers of two down to 1024 rows); the first plan
// whose device cost and host bytes fit is chosen. `input`'s tile_tokens and offloaded_layers
// are ignored.
ScheduleChoice choose_activation_schedule(const MemoryPlanInput& input,
                                          const ScheduleRequest& request,
                                          const MemoryBudget& budget);

}  // namespace ll
