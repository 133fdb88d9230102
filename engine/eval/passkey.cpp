#include "engine/eval/passkey.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <set>

#include <fmt/format.h>

#include "common/error.h"
#include "common/random.h"
#include "model/generation.h"
#include "model/llama_model.h"

namespace ll {

namespace {

std::string repeated_filler(int64_t n) {
  std::string s;
  s.reserve(size_t(n) * (std::char_traits<char>::length(kPasskeyFiller) + 1));
  for (int64_t i = 0; i < n; ++i) {
    if (i > 0) s += ' ';
    s += kPasskeyFiller;
  }
  return s;
}

std::vector<int32_t> to_ids(const std::vector<int>& v) { return {v.begin(), v.end()}; }

// The decoded text of generated ids; ids the tokenizer does not know (a model vocabulary
// larger than the tokenizer's, e.g. an added pad token) are shown as <id N>.
std::string decode_generated(const Tokenizer& tokenizer, std::span<const int32_t> ids) {
  std::string text;
  std::vector<int> run;
  auto flush = [&] {
    if (!run.empty()) text += tokenizer.decode(run);
    run.clear();
  };
  for (int32_t id : ids) {
    if (id >= 0 && id < tokenizer.vocab_size()) {
      run.push_back(id);
    } else {
      flush();
      text += fmt::format("<id {}>", id);
    }
  }
  flush();
  return text;
}

}  // namespace

std::string passkey_key_line(int64_t key) {
  return fmt::format("The pass key is {0}. Remember it. {0} is the pass key.", key);
}

std::string passkey_prompt_text(int64_t key, int64_t n_filler, int64_t key_after) {
  LL_CHECK(n_filler >= 0 && key_after >= 0 && key_after <= n_filler,
           "passkey prompt: key position {} outside the {} filler repetitions", key_after,
           n_filler);
  // The official script's five lines, joined by "\n" (an empty prefix or suffix stays an
  // empty line, as there).
  return fmt::format("{}\n{}\n{}\n{}\n{}", kPasskeyTask, repeated_filler(key_after),
                     passkey_key_line(key), repeated_filler(n_filler - key_after),
                     kPasskeyQuestion);
}

int64_t parse_context_size(const std::string& s) {
  std::string digits = s;
  int64_t unit = 1;
  if (!digits.empty() && (digits.back() == 'k' || digits.back() == 'K')) {
    unit = 1024;
    digits.pop_back();
  }
  const bool all_digits =
      !digits.empty() && digits.size() <= 15 &&
      std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; });
  LL_CHECK(all_digits,
           "context size '{}' is not a token count: write a positive integer, "
           "optionally with k for 1024 (e.g. 512, 1k, 100k)",
           s);
  const int64_t value = std::stoll(digits) * unit;  // at most 15 digits x 1024: no overflow
  LL_CHECK(value > 0, "context size '{}' must be at least 1 token", s);
  return value;
}

std::vector<int64_t> parse_context_sizes(const std::string& list) {
  std::vector<int64_t> sizes;
  std::set<int64_t> seen;
  size_t begin = 0;
  while (true) {
    const size_t comma = list.find(',', begin);
    const std::string item =
        list.substr(begin, comma == std::string::npos ? std::string::npos : comma - begin);
    const int64_t c = parse_context_size(item);
    LL_CHECK(seen.insert(c).second, "context size {} ('{}') is listed twice in '{}'", c, item,
             list);
    sizes.push_back(c);
    if (comma == std::string::npos) break;
    begin = comma + 1;
  }
  return sizes;
}

uint64_t passkey_trial_seed(uint64_t seed, int64_t context_size, int64_t trial) {
  return derive_seed(derive_seed(seed, uint64_t(context_size)), uint64_t(trial));
}

int64_t passkey_key_after(double depth_draw, int64_t n_filler) {
  return std::min(n_filler, int64_t(depth_draw * double(n_filler + 1)));
}

PasskeyPrompt make_passkey_prompt(const Tokenizer& tokenizer, int64_t context_size,
                                  uint64_t trial_seed) {
  PasskeyPrompt p;
  SplitMix64 rng{trial_seed};
  p.key = 1 + int64_t(rng.below(uint64_t(kPasskeyMaxKey)));
  p.depth_draw = rng.uniform();
  auto prompt_tokens = [&](int64_t n) {
    const std::string text = passkey_prompt_text(p.key, n, passkey_key_after(p.depth_draw, n));
    return int64_t(tokenizer.add_bos()) + int64_t(tokenizer.encode(text).size());
  };

  const int64_t base = prompt_tokens(0);
  LL_CHECK(base <= context_size,
           "context size {} is too small for a passkey prompt: without any filler it already "
           "has {} tokens (BOS, task, key line, question)",
           context_size, base);
  // Token counts grow by a near-constant amount per repetition: refine the estimate of n by
  // the secant through (0, base) and the last guess, then step to the exact answer
  // tokens(n) <= C < tokens(n + 1) (each step encodes the whole prompt, so few of them).
  int64_t n = 16;
  for (int iter = 0; iter < 4; ++iter) {
    const double per_repeat = std::max(1.0, double(prompt_tokens(n) - base) / double(n));
    const int64_t next = std::max<int64_t>(1, int64_t(double(context_size - base) / per_repeat));
    if (std::llabs(next - n) <= 1) {
      n = next;
      break;
    }
    n = next;
  }
  while (n > 0 && prompt_tokens(n) > context_size) --n;
  while (prompt_tokens(n + 1) <= context_size) ++n;

  p.filler_repeats = n;
  p.key_after = passkey_key_after(p.depth_draw, n);
  p.depth = n > 0 ? double(p.key_after) / double(n) : 0.0;
  p.text = passkey_prompt_text(p.key, n, p.key_after);
  if (tokenizer.add_bos()) p.ids.push_back(int32_t(tokenizer.bos_id()));  // Qwen2.5 adds none
  for (int id : tokenizer.encode(p.text)) p.ids.push_back(int32_t(id));
  p.answer_ids = to_ids(tokenizer.encode(std::to_string(p.key)));
  return p;
}

bool passkey_correct(std::span<const int32_t> generated, std::span<const int32_t> answer) {
  return generated.size() == answer.size() &&
         std::equal(generated.begin(), generated.end(), answer.begin());
}

int64_t PasskeyContextResult::correct() const {
  return std::count_if(trials.begin(), trials.end(),
                       [](const PasskeyTrial& t) { return t.correct; });
}

double PasskeyContextResult::accuracy() const {
  return trials.empty() ? 0.0 : double(correct()) / double(trials.size());
}

double PasskeyContextResult::mean_prompt_tokens() const {
  if (trials.empty()) return 0.0;
  double sum = 0.0;
  for (const PasskeyTrial& t : trials) sum += double(t.prompt.ids.size());
  return sum / double(trials.size());
}

std::vector<PasskeyContextResult> run_passkey(const Tokenizer& tokenizer,
                                              const PasskeyOptions& options,
                                              const PasskeyGenerator& generator,
                                              const PasskeyProgress& progress) {
  LL_CHECK(options.trials >= 1, "--trials {} must be at least 1", options.trials);
  LL_CHECK(!options.context_sizes.empty(), "no context sizes to test (--context-sizes 1k,2k)");
  std::vector<PasskeyContextResult> results;
  for (int64_t context_size : options.context_sizes) {
    PasskeyContextResult r;
    r.context_size = context_size;
    for (int64_t t = 0; t < options.trials; ++t) {
      PasskeyTrial trial;
      trial.trial = t;
      trial.prompt = make_passkey_prompt(tokenizer, context_size,
                                         passkey_trial_seed(options.seed, context_size, t));
      const int64_t n_new = int64_t(trial.prompt.answer_ids.size());
      const auto t0 = std::chrono::steady_clock::now();
      trial.generated = generator(trial.prompt.ids, n_new);
      trial.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      LL_CHECK(int64_t(trial.generated.size()) == n_new,
               "passkey: the generator returned {} tokens where {} were asked",
               trial.generated.size(), n_new);
      trial.generated_text = decode_generated(tokenizer, trial.generated);
      trial.correct = passkey_correct(trial.generated, trial.prompt.answer_ids);
      r.trials.push_back(std::move(trial));
      if (progress) progress(r, r.trials.back());
    }
    results.push_back(std::move(r));
  }
  return results;
}

PasskeyGenerator greedy_generator(LlamaModel& model, const RopeScaling& rope) {
  return [&model, rope](std::span<const int32_t> prompt, int64_t n_new) {
    GenerationOptions options;
    options.max_new_tokens = n_new;
    options.sampling.temperature = 0.0;  // greedy
    options.rope = rope;
    options.stop_tokens.clear();  // exactly n_new tokens, as the official script generates
    return generate(model, prompt, options).tokens;
  };
}

std::string format_passkey_table(const std::vector<PasskeyContextResult>& results) {
  std::string out = fmt::format("{:>9}  {:>13}  {:>6}  {:>7}  {:>8}\n", "context", "prompt tokens",
                                "trials", "correct", "accuracy");
  for (const PasskeyContextResult& r : results) {
    out += fmt::format("{:>9}  {:>13.1f}  {:>6}  {:>7}  {:>7.1f}%\n", r.context_size,
                       r.mean_prompt_tokens(), r.trials.size(), r.correct(), 100.0 * r.accuracy());
  }
  return out;
}

nlohmann::json passkey_results_json(const std::vector<PasskeyContextResult>& results) {
  nlohmann::json out = nlohmann::json::array();
  for (const PasskeyContextResult& r : results) {
    nlohmann::json details = nlohmann::json::array();
    for (const PasskeyTrial& t : r.trials) {
      details.push_back({{"trial", t.trial},
                         {"key", t.prompt.key},
                         {"depth", t.prompt.depth},
                         {"filler_repeats", t.prompt.filler_repeats},
                         {"key_after", t.prompt.key_after},
                         {"prompt_tokens", t.prompt.ids.size()},
                         {"answer_ids", t.prompt.answer_ids},
                         {"generated_ids", t.generated},
                         {"text", t.generated_text},
                         {"correct", t.correct}});
    }
    out.push_back({{"context_size", r.context_size},
                   {"prompt_tokens_mean", r.mean_prompt_tokens()},
                   {"trials", r.trials.size()},
                   {"correct", r.correct()},
                   {"accuracy", r.accuracy()},
                   {"details", std::move(details)}});
  }
  return out;
}

}  // namespace ll
