// ppl_eval: perplexity of a Llama model on a token stream, by the LongLoRA paper's protocol
// (default) or the non-overlapping one. Dense causal attention.
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <fstream>

#include "common/atomic_file.h"
#include "common/tool_main.h"
#include "data/token_file.h"
#include "engine/eval/inference_model.h"
#include "engine/eval/perplexity.h"
#include "engine/train/progress.h"
#include "kernels/attention_kernel.h"
#include "model/formats/tensor_source.h"
#include "model/llama_config.h"
#include "model/llama_model.h"

namespace {

struct Options {
  ll::InferenceModelOptions model;  // -m, --lora, --device, --context-size, --rope-factor
  std::string data;
  std::string data_format = "shard";
  int64_t seq_len = 0;
  int64_t stride = 256;
  std::string protocol = "paper";
  int64_t max_windows = 0;
  int64_t classifier_chunk = 2048;
  int64_t tile_tokens = 0;
  std::string json_path;
};

int run(int argc, char** argv) {
  Options o;
  CLI::App app{
      "Perplexity of a Llama-family model (optionally position-interpolated) on tokens.\n"
      "Example: ./ppl_eval -m llama2-7b.bin --data pg19/validation.bin "
      "--data-format raw-u16 --seq-len 32768 --context-size 32768"};
  app.add_option("-m,--model", o.model.model, "Hugging Face model directory or our .bin file")
      ->required();
  app.add_option("--data", o.data, "token file to score")->required();
  app.add_option("--data-format", o.data_format,
                 "shard (ours, from ./tokenize) or raw-u16 (the paper's eval files)")
      ->capture_default_str()
      ->check(CLI::IsMember({"shard", "raw-u16"}));
  app.add_option("--seq-len", o.seq_len, "window length in tokens")->required();
  app.add_option("--context-size", o.model.context_size,
                 "context the model was fine-tuned to: RoPE scaling for C when it exceeds the "
                 "model's context (linear: ceil(C / max_position_embeddings); the type "
                 "longlora.json records, else the model's own), else the model config's own "
                 "(default: the scaling in the --lora adapter's longlora.json, else the model "
                 "config's rope_scaling)");
  app.add_option("--rope-factor", o.model.rope_factor,
                 "linear position interpolation factor (overrides --context-size and "
                 "longlora.json)");
  app.add_option("--stride", o.stride, "paper protocol: a window starts every STRIDE tokens")
      ->capture_default_str();
  app.add_option("--protocol", o.protocol,
                 "paper (LongLoRA eval.py: overlapping windows, mean of window losses) or "
                 "non-overlapping (every token scored once)")
      ->capture_default_str()
      ->check(CLI::IsMember({"paper", "non-overlapping"}));
  app.add_option("--max-windows", o.max_windows, "score only the first K windows (0: all)")
      ->capture_default_str();
  app.add_option("--classifier-chunk", o.classifier_chunk,
                 "tokens per LM-head chunk (memory: chunk x vocab floats)")
      ->capture_default_str();
  app.add_option("--tile-tokens", o.tile_tokens,
                 "run the norms, projections and MLP over tiles of this many tokens, so that a "
                 "long window never holds [seq-len, intermediate] tensors (0: whole)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  app.add_option("--json", o.json_path, "also write the result as JSON to this file");
  app.add_option("--lora", o.model.lora,
                 "adapter directory from train_longlora (or PEFT): LoRA matrices plus "
                 "trainable_params.safetensors (embeddings, norms) applied to the base model");
  app.add_option("--device", o.model.device,
                 "backend: auto (cuda when a GPU is present, else cpu), cpu or cuda")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  app.add_option("--attention-kernel", o.model.attention_kernel, ll::kAttentionKernelHelp)
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "simt", "tc-sm80", "tc-sm90", "tc-sm90-atomic-dq"}));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }

  const auto t0 = std::chrono::steady_clock::now();
  // The data is checked against the config before the weights are loaded.
  const ll::LlamaConfig config = ll::open_model_files(o.model.model)->config;
  const ll::TokenFile data = ll::TokenFile::open(
      o.data, ll::token_file_format_from_name(o.data_format), config.vocab_size);
  const ll::PplProtocol protocol = ll::ppl_protocol_from_name(o.protocol);
  std::vector<ll::PplWindow> windows = ll::ppl_windows(data.size(), o.seq_len, o.stride, protocol);
  if (o.max_windows > 0 && int64_t(windows.size()) > o.max_windows)
    windows.resize(size_t(o.max_windows));

  const ll::InferenceModel m = ll::load_inference_model(o.model);
  ll::LlamaModel& model = *m.model;
  ll::ForwardSpec spec;
  spec.attn_mode = ll::AttnMode::Dense;
  spec.rope = m.rope;
  spec.classifier_chunk = o.classifier_chunk;
  spec.tile_tokens = o.tile_tokens;
  const double load_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  const std::string protocol_desc =
      protocol == ll::PplProtocol::Paper
          ? fmt::format(
                "paper (windows of {} every {} tokens, last start dropped, mean of "
                "window losses)",
                o.seq_len, o.stride)
          : fmt::format(
                "non-overlapping (windows of {}, every token after the first scored "
                "once)",
                o.seq_len);
  fmt::print("{}", ll::describe_inference_model(m, o.model));
  fmt::print("data           {} ({} tokens, {})\n", o.data, data.size(), o.data_format);
  fmt::print("protocol       {}\n", protocol_desc);
  std::fflush(stdout);

  ll::ProgressLine progress("ppl_eval windows");
  const auto t1 = std::chrono::steady_clock::now();
  const ll::PplResult r = ll::evaluate_perplexity(
      model, data, protocol, windows, spec, [&](int64_t done, int64_t total, int64_t scored) {
        const double s =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
        progress.update(done, total, fmt::format("{:.0f} tok/s", double(scored) / s));
      });
  progress.finish();
  const double eval_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();

  fmt::print("windows        {}\n", r.windows);
  fmt::print("tokens scored  {}\n", r.tokens_scored);
  fmt::print("mean loss      {:.6f}\n", r.mean_loss);
  fmt::print("perplexity     {:.6f}\n", r.ppl);
  fmt::print("time           load {:.2f}s, eval {:.2f}s ({:.0f} tokens/s)\n", load_s, eval_s,
             double(r.windows * o.seq_len) / eval_s);

  if (!o.json_path.empty()) {
    nlohmann::json j = {{"ppl", r.ppl},
                        {"mean_loss", r.mean_loss},
                        {"windows", r.windows},
                        {"tokens_scored", r.tokens_scored},
                        {"protocol", ll::ppl_protocol_name(protocol)},
                        {"seq_len", o.seq_len},
                        {"stride", o.stride},
                        {"context_size", o.model.context_size},
                        {"position_interpolation_factor", spec.rope.factor},
                        {"rope_scaling", ll::rope_scaling_to_json(spec.rope)},
                        {"model", o.model.model},
                        {"lora", o.model.lora},
                        {"data", o.data},
                        {"data_format", o.data_format},
                        {"window_losses", r.window_losses}};
    const std::string text = j.dump(2) + "\n";
    ll::AtomicFileWriter out(o.json_path);
    out.write(text.data(), text.size());
    out.commit();
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return ll::run_tool("ppl_eval", [&] { return run(argc, argv); });
}
