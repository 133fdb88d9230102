// generate: text generation with a key/value cache from a Llama model (+ optional LongLoRA
// adapter). The prompt (BOS first) is prefilled in one pass, then tokens are drawn one at a
// time (greedy at temperature 0, else nucleus sampling) until EOS or --max-new. The text goes
// to stdout as it is generated; setup and timing lines go to stderr.
#include <fmt/format.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "common/atomic_file.h"
#include "common/error.h"
#include "common/tool_main.h"
#include "data/tokenizer.h"
#include "data/tokenizer_path.h"
#include "engine/eval/inference_model.h"
#include "kernels/attention_kernel.h"
#include "model/generation.h"

namespace {

struct Options {
  ll::InferenceModelOptions model;
  std::string tokenizer;
  std::string prompt;
  std::string prompt_file;
  int64_t max_new = 128;
  double temperature = 0.0;
  double top_p = 1.0;
  uint64_t seed = 0;
  std::string json_path;
};

std::string read_prompt(const Options& o) {
  const bool text = !o.prompt.empty(), file = !o.prompt_file.empty();
  LL_CHECK(text != file, "give the prompt with exactly one of --prompt TEXT or --prompt-file F{}",
           text ? " (both were given)" : "");
  if (text) return o.prompt;
  std::ifstream in(o.prompt_file, std::ios::binary);
  LL_CHECK(in.good(), "{}: cannot read the prompt file", o.prompt_file);
  std::stringstream ss;
  ss << in.rdbuf();
  LL_CHECK(!in.bad(), "{}: error while reading the prompt file", o.prompt_file);
  return ss.str();
}

// Streams detokenized text: SentencePiece decodes a whole id list (spaces and multi-byte
// characters depend on neighbours), so each step decodes everything and prints the new
// suffix. A trailing U+FFFD is an unfinished UTF-8 character from byte pieces: held back.
class TextStream {
 public:
  explicit TextStream(const ll::Tokenizer& tok) : tok_(tok) {}
  void update(const std::vector<int32_t>& ids, bool final) {
    text_ = tok_.decode(std::vector<int>(ids.begin(), ids.end()));
    static const std::string kReplacement = "\xEF\xBF\xBD";
    const bool unfinished =
        text_.size() >= 3 && text_.compare(text_.size() - 3, 3, kReplacement) == 0;
    // Text already printed that a later piece rewrote cannot be taken back: wait until the
    // decoded text extends it again.
    if ((unfinished && !final) || text_.compare(0, printed_.size(), printed_) != 0) return;
    std::fwrite(text_.data() + printed_.size(), 1, text_.size() - printed_.size(), stdout);
    std::fflush(stdout);
    printed_ = text_;
  }
  const std::string& text() const { return text_; }

 private:
  const ll::Tokenizer& tok_;
  std::string text_;     // the decoded ids so far
  std::string printed_;  // the prefix of it on stdout
};

double per_second(double count, double seconds) { return seconds > 0 ? count / seconds : 0.0; }

int run(int argc, char** argv) {
  Options o;
  CLI::App app{
      "Text generation with a key/value cache from a Llama-family model, optionally with a "
      "LongLoRA adapter.\nExample: ./generate -m models/kjv-tiny --prompt \"In the "
      "beginning\" --max-new 64 --temperature 0.8 --top-p 0.9 --seed 1"};
  app.add_option("-m,--model", o.model.model, "Hugging Face model directory or our .bin file")
      ->required();
  app.add_option("--lora", o.model.lora,
                 "adapter directory from train_longlora (or PEFT); its longlora.json sets the "
                 "position interpolation factor");
  app.add_option("--prompt", o.prompt, "prompt text (BOS is always put first)");
  app.add_option("--prompt-file", o.prompt_file, "file holding the prompt text");
  app.add_option("--tokenizer", o.tokenizer,
                 "tokenizer.json or tokenizer.model (default: the one beside the model)");
  app.add_option("--max-new", o.max_new, "most tokens to generate (stops earlier at EOS)")
      ->capture_default_str();
  app.add_option("--temperature", o.temperature, "sampling temperature; 0 is greedy decoding")
      ->capture_default_str();
  app.add_option("--top-p", o.top_p,
                 "nucleus sampling: keep the most likely tokens up to this "
                 "probability mass, in (0, 1]")
      ->capture_default_str();
  app.add_option("--seed", o.seed, "sampler seed (same seed, same text)")->capture_default_str();
  app.add_option("--json", o.json_path,
                 "also write prompt, prompt_tokens, tokens, text, stopped_at_eos and timing as "
                 "JSON to this file");
  app.add_option("--device", o.model.device,
                 "backend: auto (cuda when a GPU is present, else cpu), cpu or cuda")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "cpu", "cuda"}));
  app.add_option("--attention-kernel", o.model.attention_kernel, ll::kAttentionKernelHelp)
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "simt", "tc-sm80", "tc-sm90", "tc-sm90-atomic-dq"}));
  app.add_option("--context-size", o.model.context_size,
                 "context the model was fine-tuned to (default: the adapter's longlora.json, "
                 "else max_position_embeddings x rope factor); position interpolation factor "
                 "ceil(C / max_position_embeddings) when C exceeds it");
  app.add_option("--rope-factor", o.model.rope_factor,
                 "linear position interpolation factor (overrides --context-size and "
                 "longlora.json)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }

  // Cheap checks first: nothing is loaded for a bad command line.
  ll::SamplingOptions sampling{o.temperature, o.top_p, o.seed};
  LL_CHECK(std::isfinite(o.temperature) && o.temperature >= 0.0,
           "--temperature must be >= 0 (0: greedy), got {}", o.temperature);
  LL_CHECK(std::isfinite(o.top_p) && o.top_p > 0.0 && o.top_p <= 1.0,
           "--top-p must be in (0, 1], got {}", o.top_p);
  LL_CHECK(o.max_new >= 1, "--max-new must be at least 1, got {}", o.max_new);
  const std::string prompt_text = read_prompt(o);
  const ll::Tokenizer tokenizer(ll::find_tokenizer_model(o.model.model, o.tokenizer));
  std::vector<int32_t> prompt;
  if (tokenizer.add_bos()) prompt.push_back(int32_t(tokenizer.bos_id()));  // Qwen2.5 adds none
  for (int id : tokenizer.encode(prompt_text)) prompt.push_back(int32_t(id));

  // The vocabulary and the context are known before the weights load.
  ll::InferenceModel m = ll::load_inference_model(o.model, [&](const ll::InferenceModel& info) {
    LL_CHECK(tokenizer.vocab_size() <= info.config.vocab_size,
             "the tokenizer has {} pieces but the model's vocabulary is {}: the tokenizer "
             "belongs to another model (pass the right one with --tokenizer)",
             tokenizer.vocab_size(), info.config.vocab_size);
    const int64_t needed = int64_t(prompt.size()) + o.max_new;
    LL_CHECK(needed <= info.context,
             "the prompt ({} tokens with BOS) plus --max-new {} is {} tokens, more than the "
             "model's context of {} tokens; shorten the prompt, lower --max-new, or raise "
             "--context-size (with the matching --rope-factor)",
             prompt.size(), o.max_new, needed, info.context);
  });

  std::string setup = ll::describe_inference_model(m, o.model);
  setup += fmt::format("prompt         {} tokens (BOS first)\n", prompt.size());
  setup += o.temperature == 0.0
               ? fmt::format("sampling       greedy, at most {} new tokens\n", o.max_new)
               : fmt::format(
                     "sampling       temperature {}, top-p {}, seed {}, at most {} new "
                     "tokens\n",
                     o.temperature, o.top_p, o.seed, o.max_new);
  std::fputs(setup.c_str(), stderr);
  std::fflush(stderr);

  ll::GenerationOptions g;
  g.max_new_tokens = o.max_new;
  g.sampling = sampling;
  g.rope = m.rope;
  // Every EOS id of the config (Llama-3 Instruct: end_of_text, eom and eot) and the tokenizer's.
  for (int64_t id : m.config.eos_token_ids) g.stop_tokens.push_back(int32_t(id));
  if (tokenizer.eos_id() >= 0) g.stop_tokens.push_back(int32_t(tokenizer.eos_id()));
  TextStream stream(tokenizer);
  std::vector<int32_t> so_far;
  const ll::GenerationResult r = ll::generate(*m.model, prompt, g, [&](int32_t id) {
    so_far.push_back(id);
    stream.update(so_far, false);
  });
  stream.update(r.tokens, true);
  std::fputs("\n", stdout);
  std::fflush(stdout);

  const double prefill_tps = per_second(double(prompt.size()), r.prefill_s);
  const double decode_steps = double(r.tokens.size()) - 1.0;  // the first token came from prefill
  const double decode_tps = per_second(decode_steps, r.decode_s);
  std::fputs(fmt::format("generated      {} tokens{}\n", r.tokens.size(),
                         r.stopped ? " (stopped at EOS)" : "")
                 .c_str(),
             stderr);
  std::fputs(
      fmt::format("time           prefill {} tokens in {:.3f}s ({:.1f} tok/s), decode {} "
                  "tokens in {:.3f}s ({:.1f} tok/s)\n",
                  prompt.size(), r.prefill_s, prefill_tps, decode_steps, r.decode_s, decode_tps)
          .c_str(),
      stderr);

  if (!o.json_path.empty()) {
    nlohmann::json j = {
        {"prompt", prompt_text},
        {"prompt_tokens", prompt},
        {"tokens", r.tokens},
        {"text", stream.text()},
        {"stopped_at_eos", r.stopped},
        {"model", o.model.model},
        {"lora", o.model.lora},
        {"sampling", {{"temperature", o.temperature}, {"top_p", o.top_p}, {"seed", o.seed}}},
        {"position_interpolation_factor", m.rope.factor},
        {"rope_scaling", ll::rope_scaling_to_json(m.rope)},
        {"context", m.context},
        {"timing",
         {{"prefill_s", r.prefill_s},
          {"decode_s", r.decode_s},
          {"prefill_tokens_per_s", prefill_tps},
          {"decode_tokens_per_s", decode_tps}}}};
    const std::string text = j.dump(2) + "\n";
    ll::AtomicFileWriter out(o.json_path);
    out.write(text.data(), text.size());
    out.commit();
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return ll::run_tool("generate", [&] { return run(argc, argv); });
}
