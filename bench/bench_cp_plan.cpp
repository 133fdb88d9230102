// bench_cp_plan: context parallelism's communication per training step and rank, from the
// exchange plan (engine/parallel/context_exchange.h; no run, no GPU): S2-Attn's halo against
// ring attention's K/V passing, for a model shape (default Llama-2-7B: 32 layers, 32 heads and
// kv heads of 128) at several window lengths over C ranks, bf16 values. Per layer the forward
// receives the halo's keys and values (S2) or every other part's (ring) and the backward sends
// their gradients back (S2) or passes K/V with their gradient accumulators around again (ring:
// twice the forward). The busiest rank's bytes are reported; tests/engine/parallel check the
// plan's counts against what the halo exchange sends at small size.
#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <algorithm>
#include <vector>

#include "common/tool_main.h"
#include "engine/parallel/context_exchange.h"

namespace {

int run(int argc, char** argv) {
  std::vector<int64_t> contexts = {131072, 1048576, 4194304};
  int parts = 8;
  int64_t layers = 32, heads = 32, kv_heads = 32, head_dim = 128;
  double group_ratio = 0.25;
  CLI::App app{
      "Context-parallel communication per step and rank from the plan: S2 halo vs ring.\n"
      "Example: ./bench_cp_plan --ctx 131072,1048576 --parts 8"};
  app.add_option("--ctx", contexts, "window lengths")->delimiter(',')->capture_default_str();
  app.add_option("--parts", parts, "context-parallel ranks C")->capture_default_str();
  app.add_option("--layers", layers, "decoder layers")->capture_default_str();
  app.add_option("--heads", heads, "query heads")->capture_default_str();
  app.add_option("--kv-heads", kv_heads, "key/value heads")->capture_default_str();
  app.add_option("--head-dim", head_dim, "head dim")->capture_default_str();
  app.add_option("--group-ratio", group_ratio, "S2 group G = N x ratio")->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  const double gib = double(int64_t(1) << 30);
  fmt::print("| N | C | G | S2 halo GiB/step/rank | ring GiB/step/rank | ring / S2 |\n");
  fmt::print("|---:|---:|---:|---:|---:|---:|\n");
  for (const int64_t n : contexts) {
    const int64_t g = ll::s2_group_size(n, group_ratio);
    const ll::AttentionPattern mask{ll::AttnMode::S2, n, g, heads};
    const ll::dist::ContextExchange ex = ll::dist::plan_context_exchange(mask, kv_heads, parts);
    int64_t s2 = 0, ring = 0;  // elements per layer, the busiest rank
    for (int p = 0; p < parts; ++p) {
      // Forward: receive the halo and send what others need; backward: the same back.
      const int64_t moved = ex.received_kv_elements(p, head_dim) + ex.sent_kv_elements(p, head_dim);
      s2 = std::max(s2, 2 * moved);
      const int64_t kv_dim = kv_heads * head_dim;
      ring = std::max(ring, ll::dist::ring_forward_kv_elements(n, parts, p, kv_dim) +
                                ll::dist::ring_backward_kv_elements(n, parts, p, kv_dim));
    }
    const double s2_bytes = double(2 * layers * s2), ring_bytes = double(2 * layers * ring);
    fmt::print("| {} | {} | {} | {:.2f} | {:.2f} | {:.1f}x |\n", n, parts, g, s2_bytes / gib,
               ring_bytes / gib, s2_bytes > 0 ? ring_bytes / s2_bytes : 0.0);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return ll::run_tool("bench_cp_plan", [&] { return run(argc, argv); });
}
