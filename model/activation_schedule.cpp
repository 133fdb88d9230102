#include "model/activation_schedule.h"

#include <algorithm>
#include <vector>

#include <fmt/format.h>

#include "common/error.h"

namespace ll {

namespace {

constexpr int64_t kMinAutoTile = 1024;  // smaller tiles save little and slow the GEMMs down

int64_t cost_of(const ScheduleRequest& request, const MemoryPlan& plan) {
  return request.device_cost ? request.device_cost(plan) : plan.total();
}

// The tiles auto tries for n tokens, largest first; a fixed tile alone.
std::vector<int64_t> tile_candidates(int64_t n, int64_t fixed) {
  if (fixed > 0) return {std::min(fixed, n)};
  std::vector<int64_t> tiles = {n};
  int64_t t = 1;
  while (t * 2 < n) t *= 2;
  for (; t >= kMinAutoTile && t < n; t /= 2) tiles.push_back(t);
  return tiles;
}

std::vector<int64_t> offload_candidates(OffloadMode mode, int64_t layers, bool useful) {
  if (mode == OffloadMode::Off || layers < 2) return {0};
  if (mode == OffloadMode::On) return {layers - 1};
  std::vector<int64_t> out = {0};
  if (!useful) return out;
  // One offloaded layer saves nothing unless it is every layer but the last
  // (model/saved_block_inputs.h).
  for (int64_t m = layers > 2 ? 2 : 1; m < layers; ++m) out.push_back(m);
  return out;
}

std::string describe(const MemoryPlan& plan, int64_t layers) {
  if (plan.offloaded_layers == 0) return "no activation offload";
  return fmt::format("block inputs of {} of {} layers in host memory ({})", plan.offloaded_layers,
                     layers, format_bytes(plan.host_bytes));
}

}  // namespace

OffloadMode parse_offload_mode(std::string_view text) {
  if (text == "auto") return OffloadMode::Auto;
  if (text == "on") return OffloadMode::On;
  if (text == "off") return OffloadMode::Off;
  fail("--offload-activations {} is not one of auto, on, off", text);
}

int64_t usable_device_bytes(const MemoryBudget& b) {
  if (b.device_free < 0) return -1;
  const int64_t total = b.device_total < 0 ? b.device_free : b.device_total;
  return std::max<int64_t>(0, b.device_free - total / 20);
}

ScheduleChoice choose_activation_schedule(const MemoryPlanInput& input,
                                          const ScheduleRequest& request,
                                          const MemoryBudget& budget) {
  const int64_t layers = input.config.num_hidden_layers, n = input.seq_len;
  LL_CHECK(request.tile_tokens >= 0 && request.tile_tokens <= n,
           "--tile-tokens {}: a tile has between 1 and -ctx ({}) tokens", request.tile_tokens, n);
  const int64_t usable = usable_device_bytes(budget);
  auto fits_device = [&](const MemoryPlan& p) {
    return usable < 0 || cost_of(request, p) <= usable;
  };
  auto fits_host = [&](const MemoryPlan& p) {
    return budget.host_free < 0 || p.host_bytes <= budget.host_free;
  };
  auto plan_with = [&](MemoryPlanInput in, int64_t offloaded, int64_t tile) {
    in.offloaded_layers = offloaded;
    in.tile_tokens = tile;
    return plan_training_memory(in);
  };
  auto tile_text = [&](const MemoryPlan& p) {
    return p.tile_tokens >= n ? std::string("whole tensors (no token tiles)")
                              : fmt::format("token tiles of {}", p.tile_tokens);
  };
  auto limit_text = [&]() {
    if (usable < 0) return std::string("no device limit");
    const int64_t total = budget.device_total < 0 ? budget.device_free : budget.device_total;
    return fmt::format("{} usable ({} free of {}, less 5%)", format_bytes(usable),
                       format_bytes(budget.device_free), format_bytes(total));
  };

  const std::vector<int64_t> tiles = tile_candidates(n, request.tile_tokens);
  const std::vector<int64_t> offloads =
      offload_candidates(request.offload, layers, request.offload_useful);
  ScheduleChoice choice;
  bool host_short = false;
  for (const int64_t m : offloads) {
    for (const int64_t t : tiles) {
      MemoryPlan p = plan_with(input, m, t);
      if (!fits_host(p)) {
        host_short = true;
        continue;
      }
      if (!fits_device(p)) continue;
      choice.fits = true;
      choice.summary = fmt::format("{}, {}: {} of device memory, {}", describe(p, layers),
                                   tile_text(p), format_bytes(cost_of(request, p)), limit_text());
      choice.plan = std::move(p);
      return choice;
    }
  }

  // Nothing fits: the smallest plan tried, and what would fit.
  choice.plan = plan_with(input, offloads.back(), tiles.back());
  const MemoryPlan& least = choice.plan;
  choice.summary = fmt::format(
      "does not fit: the smallest plan ({}, {}) needs {} of device memory and {} of "
      "host memory; there is {}{}",
      describe(least, layers), tile_text(least), format_bytes(cost_of(request, least)),
      format_bytes(least.host_bytes), limit_text(),
      budget.host_free < 0 ? ""
                           : fmt::format(" and {} of host memory", format_bytes(budget.host_free)));
  std::string& advice = choice.advice;
  if (host_short && fits_device(least))
    advice += fmt::format(
        "  more host memory: offloading {} layers' inputs needs {} (there is {})\n",
        least.offloaded_layers, format_bytes(least.host_bytes), format_bytes(budget.host_free));
  if (request.offload == OffloadMode::Off && layers >= 3) {
    const MemoryPlan on = plan_with(input, layers - 1, tiles.back());
    if (fits_device(on))
      advice += fmt::format(
          "  --offload-activations auto: with {} layers' inputs in host memory "
          "({}) it needs {}\n",
          layers - 1, format_bytes(on.host_bytes), format_bytes(cost_of(request, on)));
  }
  if (request.tile_tokens > kMinAutoTile) {
    const MemoryPlan small = plan_with(input, offloads.back(), kMinAutoTile);
    if (fits_device(small) && fits_host(small))
      advice += fmt::format("  --tile-tokens {} (or auto): it needs {}\n", kMinAutoTile,
                            format_bytes(cost_of(request, small)));
  }
  // The longest context that fits with the most saving settings, in steps of 1024 tokens.
  if (usable >= 0 && n > 1024) {
    int64_t lo = 0, hi = n / 1024;  // lo fits (0: nothing), hi does not
    while (hi - lo > 1) {
      const int64_t mid = (lo + hi) / 2;
      MemoryPlanInput shorter = input;
      shorter.seq_len = mid * 1024;
      const std::vector<int64_t> ts = tile_candidates(shorter.seq_len, request.tile_tokens);
      const MemoryPlan p = plan_with(shorter, offloads.back(), ts.back());
      (fits_device(p) && fits_host(p) ? lo : hi) = mid;
    }
    if (lo > 0)
      advice += fmt::format(
          "  fewer tokens: -ctx {} fits (the longest multiple of 1024 with these settings)\n",
          lo * 1024);
  }
  // The data-parallel path shards the optimizer state over the ranks (each rank still holds
  // the whole window's activations).
  if (usable >= 0) {
    for (int world = 2; world <= 64; world *= 2) {
      const RankFootprint f =
          sharded_rank_footprint(least, world, input.backend.kind == BackendKind::Cuda);
      if (f.total <= usable) {
        advice += fmt::format(
            "  {} GPUs with the data-parallel path (mpirun -np {}): {} per "
            "rank, the optimizer state sharded\n",
            world, world, format_bytes(f.total));
        break;
      }
    }
  }
  if (least.peak_phase == "classifier" && input.classifier_chunk > 256) {
    MemoryPlanInput chunked = input;
    for (int64_t c = input.classifier_chunk / 2; c >= 256; c /= 2) {
      chunked.classifier_chunk = c;
      const MemoryPlan p = plan_with(chunked, offloads.back(), tiles.back());
      if (fits_device(p) && fits_host(p)) {
        advice += fmt::format("  --classifier-chunk {}: it needs {}\n", c,
                              format_bytes(cost_of(request, p)));
        break;
      }
    }
  }
  if (advice.empty()) advice = "  nothing this tool can change fits this device\n";
  return choice;
}

}  // namespace ll
