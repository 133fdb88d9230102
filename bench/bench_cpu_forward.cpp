// bench_cpu_forward: forward-pass throughput (tokens/s) of the CPU reference backend on a
// small random Llama, the same shapes bench/torch_cpu_forward.py runs in PyTorch.
#include <fmt/format.h>
#include <omp.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <random>

#include "common/tool_main.h"
#include "kernels/cpu/cpu_backend.h"
#include "model/llama_model.h"
#include "model/llama_weights.h"

namespace {

int run(int argc, char** argv) {
  std::vector<int64_t> seq_lens = {512, 2048};
  int repeats = 3;
  ll::LlamaConfig c;
  c.hidden_size = 512;
  c.intermediate_size = 1376;
  c.num_hidden_layers = 8;
  c.num_attention_heads = 8;
  c.num_key_value_heads = 8;
  c.vocab_size = 32000;
  c.max_position_embeddings = 4096;
  c.rms_norm_eps = 1e-5;
  std::string json_path;
  CLI::App app{"CPU reference forward throughput on a small random Llama"};
  app.add_option("--seq-lens", seq_lens, "sequence lengths")->capture_default_str();
  app.add_option("--repeats", repeats, "timed runs per length (median reported)")
      ->capture_default_str();
  app.add_option("--hidden", c.hidden_size)->capture_default_str();
  app.add_option("--layers", c.num_hidden_layers)->capture_default_str();
  app.add_option("--heads", c.num_attention_heads)->capture_default_str();
  app.add_option("--kv-heads", c.num_key_value_heads)->capture_default_str();
  app.add_option("--intermediate", c.intermediate_size)->capture_default_str();
  app.add_option("--vocab", c.vocab_size)->capture_default_str();
  app.add_option("--json", json_path, "write results as JSON");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  ll::validate_llama_config(c, "bench config");
  ll::CpuBackend backend;
  ll::LlamaModel model(backend, ll::random_llama_weights(c, 1234));
  fmt::print("model: hidden {} layers {} heads {} intermediate {} vocab {}; {} OpenMP threads\n",
             c.hidden_size, c.num_hidden_layers, c.num_attention_heads, c.intermediate_size,
             c.vocab_size, omp_get_max_threads());
  fmt::print("{:>8} {:>12} {:>12}\n", "seq_len", "median_s", "tokens/s");
  nlohmann::json rows = nlohmann::json::array();
  std::mt19937 rng(7);
  for (int64_t n : seq_lens) {
    std::vector<int32_t> tokens(static_cast<size_t>(n));  // [N]
    for (auto& t : tokens) t = int32_t(rng() % uint32_t(c.vocab_size));
    ll::ForwardSpec spec;
    model.next_token_losses(tokens, spec);  // warm-up
    std::vector<double> times;
    for (int r = 0; r < repeats; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      model.next_token_losses(tokens, spec);
      times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(times.begin(), times.end());
    const double med = times[times.size() / 2];
    fmt::print("{:>8} {:>12.4f} {:>12.1f}\n", n, med, double(n) / med);
    rows.push_back({{"seq_len", n}, {"median_s", med}, {"tokens_per_s", double(n) / med}});
  }
  if (!json_path.empty()) {
    std::ofstream(json_path) << rows.dump(2) << "\n";
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return ll::run_tool("bench_cpu_forward", [&] { return run(argc, argv); });
}
