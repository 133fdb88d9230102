#pragma once
// Passkey retrieval (LongLoRA paper section 4, its passkey_retrivial.py), with the context
// measured in tokens:
//   prompt text = task description, prefix filler, key line, suffix filler, question, joined
//   by "\n" as the official script does; the filler is kPasskeyFiller repeated (joined by
//   " "), and the key line sits between two whole repetitions (the official script cuts the
//   filler at a character, possibly inside a word). The prompt is BOS + the
//   encoding of that text. For a context size C the number of repetitions n is the largest
//   whose prompt has at most C tokens; the key goes after k of them (depth k / n).
//   answer = encode(str(K)) without BOS; greedy decoding of exactly |answer| new tokens
//   (no stop token); correct when every generated id equals the answer's. (Decoding feeds
//   |answer| - 1 tokens after the prompt, so positions reach C + |answer| - 2: the context
//   is the prompt's length, as the paper reports it.)
// Randomness (same seed, same prompts, whatever other context sizes are listed): trial t at
// context size C draws from SplitMix64{derive_seed(derive_seed(seed, C), t)}, in order:
//   key K = 1 + below(50000)   (uniform in [1, 50000])
//   u = uniform()              (in [0, 1)); k = min(n, floor(u * (n + 1))), uniform over
//                              the n + 1 places between repetitions.
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/tokenizer.h"
#include "kernels/rope_scaling.h"

namespace ll {

class LlamaModel;

inline constexpr const char* kPasskeyTask =
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize "
    "them. I will quiz you about the important information there.";
inline constexpr const char* kPasskeyFiller =
    "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";
inline constexpr const char* kPasskeyQuestion = "What is the pass key? The pass key is";
inline constexpr int64_t kPasskeyMaxKey = 50000;

// "The pass key is K. Remember it. K is the pass key."
std::string passkey_key_line(int64_t key);

// The prompt text with n_filler repetitions, the key line after the first `key_after` of them.
std::string passkey_prompt_text(int64_t key, int64_t n_filler, int64_t key_after);

// "1k" = 1024, "2K" = 2048, "512", "100k" = 102400. Throws ll::Error naming the string for
// anything else (empty, not a positive integer, other suffixes, overflow).
int64_t parse_context_size(const std::string& s);
// A comma-separated list of the above ("1k,2k,4k"); duplicates are an error.
std::vector<int64_t> parse_context_sizes(const std::string& list);

// The seed of trial `trial` at context size `context_size` (see the header comment).
uint64_t passkey_trial_seed(uint64_t seed, int64_t context_size, int64_t trial);

// Repetitions before the key for the depth draw u in [0, 1) and n repetitions:
// min(n, floor(u * (n + 1))).
int64_t passkey_key_after(double depth_draw, int64_t n_filler);

struct PasskeyPrompt {
  int64_t key = 0;                  // K in [1, 50000]
  int64_t filler_repeats = 0;       // n
  int64_t key_after = 0;            // k: repetitions before the key line
  double depth_draw = 0.0;          // u in [0, 1), from which k follows for any n
  double depth = 0.0;               // k / n (0 when n = 0): 0 = first, 1 = last before the question
  std::string text;                 // without BOS
  std::vector<int32_t> ids;         // [prompt tokens]: BOS (if the family adds it) + encode(text)
  std::vector<int32_t> answer_ids;  // [answer tokens]: encode(str(K)), no BOS
};

// The prompt of one trial: the largest filler that keeps ids.size() <= context_size. Throws
// ll::Error when even the prompt without filler is longer than context_size (naming both).
PasskeyPrompt make_passkey_prompt(const Tokenizer& tokenizer, int64_t context_size,
                                  uint64_t trial_seed);

// Exact match: the same length and every id equal.
bool passkey_correct(std::span<const int32_t> generated, std::span<const int32_t> answer);

struct PasskeyTrial {
  int64_t trial = 0;
  PasskeyPrompt prompt;
  std::vector<int32_t> generated;  // [answer tokens]
  std::string generated_text;      // decoded
  bool correct = false;
  double seconds = 0.0;  // generation wall time (printed, not in the JSON)
};

struct PasskeyContextResult {
  int64_t context_size = 0;
  std::vector<PasskeyTrial> trials;

  int64_t correct() const;
  double accuracy() const;  // correct / trials
  double mean_prompt_tokens() const;
};

struct PasskeyOptions {
  std::vector<int64_t> context_sizes;
  int64_t trials = 10;
  uint64_t seed = 0;
};

// Greedy continuation of `prompt` by exactly `n_new` tokens. The run loop's only link to a
// model, so that tests can score it with a known answerer.
using PasskeyGenerator =
    std::function<std::vector<int32_t>(std::span<const int32_t> prompt, int64_t n_new)>;

// Called after every trial (for the progress line).
using PasskeyProgress = std::function<void(const PasskeyContextResult&, const PasskeyTrial&)>;

// Every trial of every context size, in order. Throws ll::Error for trials < 1, an empty
// list, or a generator that returns a different number of tokens than asked.
std::vector<PasskeyContextResult> run_passkey(const Tokenizer& tokenizer,
                                              const PasskeyOptions& options,
                                              const PasskeyGenerator& generator,
                                              const PasskeyProgress& progress = {});

// The generator for a model: model/generation.h's generate, greedy, `rope` applied, no
// stop token (the answer's length is what is generated, as in the official script).
PasskeyGenerator greedy_generator(LlamaModel& model, const RopeScaling& rope);

// A table, one row per context size: context, prompt tokens (mean), trials, correct, accuracy.
std::string format_passkey_table(const std::vector<PasskeyContextResult>& results);

// [{context_size, prompt_tokens_mean, trials, correct, accuracy, details: [{trial, key, depth,
// filler_repeats, key_after, prompt_tokens, answer_ids, generated_ids, text, correct}]}], one
// object per context size. No timings: the same seed gives the same JSON.
nlohmann::json passkey_results_json(const std::vector<PasskeyContextResult>& results);

}  // namespace ll
