// passkey: the LongLoRA paper's passkey retrieval test (engine/eval/passkey.h) at several context
// lengths measured in tokens: a key hidden at a random depth in filler text, greedy
// decoding, exact match; accuracy per context length. A context size beyond the model's
// usable context (engine/eval/inference_model.h: --context-size, the adapter's training context,
// else max_position_embeddings x rope factor) is refused before any trial runs, unless
// --allow-beyond-context asks for extrapolation.
#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "common/atomic_file.h"
#include "common/error.h"
#include "common/tool_main.h"
#include "data/tokenizer.h"
#include "data/tokenizer_path.h"
#include "engine/eval/inference_model.h"
#include "engine/eval/passkey.h"
#include "engine/train/progress.h"
#include "kernels/attention_kernel.h"

namespace {

struct Options {
  ll::InferenceModelOptions model;
  std::string tokenizer;
  std::string context_sizes;
  int64_t trials = 10;
  uint64_t seed = 0;
  std::string json_path;
  bool allow_beyond_context = false;
};

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

int run(const Options& o) {
  // Everything that needs no model is checked first: a typo fails in milliseconds.
  ll::PasskeyOptions passkey;
  passkey.context_sizes = ll::parse_context_sizes(o.context_sizes);
  passkey.trials = o.trials;
  passkey.seed = o.seed;
  LL_CHECK(o.trials >= 1, "--trials {} must be at least 1", o.trials);
  const std::string tokenizer_path = ll::find_tokenizer_model(o.model.model, o.tokenizer);
  const ll::Tokenizer tokenizer(tokenizer_path);
  // A context too small for the task text fails here, not after a long model load (the
  // prompt without filler varies by a token or two with the key, so trial 0 stands for all).
  for (int64_t c : passkey.context_sizes) {
    ll::make_passkey_prompt(tokenizer, c, ll::passkey_trial_seed(o.seed, c, 0));
  }

  const auto t0 = std::chrono::steady_clock::now();
  // The vocabulary and the context are known before the weights load.
  ll::InferenceModel m = ll::load_inference_model(o.model, [&](const ll::InferenceModel& info) {
    LL_CHECK(tokenizer.vocab_size() <= info.config.vocab_size,
             "{}: the tokenizer has {} pieces but the model's vocabulary has only {} ids; pass "
             "the model's own tokenizer.model with --tokenizer",
             tokenizer_path, tokenizer.vocab_size(), info.config.vocab_size);
    for (int64_t c : passkey.context_sizes) {
      LL_CHECK(o.allow_beyond_context || c <= info.context,
               "context size {} is beyond the model's usable context of {} tokens ({}); give "
               "--context-size C for a model fine-tuned to C tokens (position interpolation), "
               "or --allow-beyond-context to test extrapolation",
               c, info.context, info.rope_source);
    }
  });
  const double load_s = seconds_since(t0);

  fmt::print("{}", ll::describe_inference_model(m, o.model));
  fmt::print("tokenizer      {} ({} pieces)\n", tokenizer_path, tokenizer.vocab_size());
  fmt::print(
      "passkey        {} trial{} per context, seed {}; key in [1, {}] at a random depth "
      "of the filler; greedy decoding of the answer's length, exact match\n",
      o.trials, o.trials == 1 ? "" : "s", o.seed, ll::kPasskeyMaxKey);
  std::fflush(stdout);

  const auto t1 = std::chrono::steady_clock::now();
  const std::vector<ll::PasskeyContextResult> results = ll::run_passkey(
      tokenizer, passkey, ll::greedy_generator(*m.model, m.rope),
      [](const ll::PasskeyContextResult& r, const ll::PasskeyTrial& t) {
        fmt::print(
            "context {:>7} trial {:>3}: key {:>5} at depth {:.2f}, {} prompt tokens -> "
            "\"{}\" {} ({})\n",
            r.context_size, t.trial, t.prompt.key, t.prompt.depth, t.prompt.ids.size(),
            t.generated_text, t.correct ? "correct" : "wrong", ll::format_duration(t.seconds));
        std::fflush(stdout);
      });
  const double run_s = seconds_since(t1);

  fmt::print("\n{}", ll::format_passkey_table(results));
  fmt::print("time           load {}, passkey {}\n", ll::format_duration(load_s),
             ll::format_duration(run_s));

  if (!o.json_path.empty()) {
    const nlohmann::json j = {{"model", o.model.model},
                              {"lora", o.model.lora},
                              {"tokenizer", tokenizer_path},
                              {"seed", o.seed},
                              {"trials", o.trials},
                              {"position_interpolation_factor", m.rope.factor},
                              {"rope_scaling", ll::rope_scaling_to_json(m.rope)},
                              {"usable_context", m.context},
                              {"allow_beyond_context", o.allow_beyond_context},
                              {"results", ll::passkey_results_json(results)}};
    const std::string text = j.dump(2) + "\n";
    ll::AtomicFileWriter out(o.json_path);
    out.write(text.data(), text.size());
    out.commit();
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{
      "Passkey retrieval (LongLoRA paper section 4): a pass key hidden at a random "
      "depth in filler text, greedy decoding, exact match; accuracy per context "
      "length in tokens.\nExample: ./passkey -m llama2-7b.bin --lora out/7b-8k "
      "--context-sizes 1k,2k,4k,8k --trials 10 --json passkey.json"};
  app.add_option("-m,--model", o.model.model, "Hugging Face model directory or our .bin file")
      ->required();
  app.add_option("--lora", o.model.lora,
                 "adapter directory from train_longlora (or PEFT) applied to the model");
  app.add_option("--tokenizer", o.tokenizer,
                 "tokenizer.json or tokenizer.model (default: the one next to the model)");
  app.add_option("--context-sizes", o.context_sizes,
                 "prompt lengths to test, in tokens: comma-separated, k = 1024 (1k,2k,4k)")
      ->required();
  app.add_option("--trials", o.trials, "trials (keys and depths) per context size")
      ->capture_default_str();
  app.add_option("--seed", o.seed, "seed of the keys and depths (same seed, same prompts)")
      ->capture_default_str();
  app.add_option("--json", o.json_path, "also write the results and every trial to this file");
  app.add_option("--device", o.model.device,
                 "backend: auto (cuda when a GPU is present, else cpu), cpu or cuda")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  app.add_option("--attention-kernel", o.model.attention_kernel, ll::kAttentionKernelHelp)
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "simt", "tc-sm80", "tc-sm90", "tc-sm90-atomic-dq"}));
  app.add_option("--context-size", o.model.context_size,
                 "context the model was fine-tuned to: position interpolation factor "
                 "ceil(C / max_position_embeddings) and the usable context (default: the "
                 "adapter's longlora.json, else the model config)");
  app.add_option("--rope-factor", o.model.rope_factor,
                 "linear position interpolation factor (overrides --context-size's)");
  app.add_flag("--allow-beyond-context", o.allow_beyond_context,
               "test context sizes beyond the model's usable context (extrapolation)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  return ll::run_tool("passkey", [&] { return run(o); });
}
