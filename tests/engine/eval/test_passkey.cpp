// Passkey retrieval (engine/eval/passkey.h): prompts built to the token budget with the key at the
// recorded depth, the documented seed derivation, exact-match scoring, context-size parsing,
// the run loop's bookkeeping with a known answerer, and, end to end on models/kjv-tiny, the
// generated ids against argmax of the full forward pass.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <regex>
#include <set>
#include <span>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/random.h"
#include "data/tokenizer.h"
#include "engine/eval/passkey.h"
#include "kernels/cpu/cpu_backend.h"
#include "model/formats/tensor_source.h"
#include "model/llama_model.h"
#include "model/llama_weights.h"
#include "tests/data/scratch.h"

using ll::test::contains;
using ll::test::error_of;

namespace {

const std::string kKjv = std::string(LL_SOURCE_DIR) + "/models/kjv-tiny";
const std::string kTinyLlama = std::string(LL_SOURCE_DIR) + "/tests/fixtures/tiny_llama";

int64_t count_of(const std::string& text, const std::string& part) {
  int64_t n = 0;
  for (size_t at = text.find(part); at != std::string::npos; at = text.find(part, at + 1)) ++n;
  return n;
}

// SentencePiece's default normalisation (these fixture tokenizers) turns newlines into spaces
// and squeezes runs of them; Llama-2's keeps them. Compare texts modulo that.
std::string squeezed(const std::string& text) {
  std::string out;
  for (char ch : text) {
    const char c = ch == '\n' ? ' ' : ch;
    if (c == ' ' && !out.empty() && out.back() == ' ') continue;
    out += c;
  }
  return out;
}

int64_t token_count(const ll::Tokenizer& tok, const std::string& text) {
  return 1 + int64_t(tok.encode(text).size());  // BOS + text
}

std::vector<int32_t> encode32(const ll::Tokenizer& tok, const std::string& text) {
  const std::vector<int> ids = tok.encode(text);
  return {ids.begin(), ids.end()};
}

// The key a prompt hides, read back from its text (what a perfect model would do).
int64_t key_in(const ll::Tokenizer& tok, std::span<const int32_t> prompt) {
  const std::string text = tok.decode(std::vector<int>(prompt.begin() + 1, prompt.end()));
  std::smatch m;
  REQUIRE(std::regex_search(text, m, std::regex("The pass key is (\\d+)\\. Remember it\\.")));
  return std::stoll(m[1].str());
}

}  // namespace

TEST_CASE("context sizes: k is 1024, plain integers, anything else is an error") {
  CHECK(ll::parse_context_size("1k") == 1024);
  CHECK(ll::parse_context_size("2k") == 2048);
  CHECK(ll::parse_context_size("2K") == 2048);
  CHECK(ll::parse_context_size("512") == 512);
  CHECK(ll::parse_context_size("100k") == 102400);
  CHECK(ll::parse_context_sizes("256,1k,4k") == std::vector<int64_t>{256, 1024, 4096});
  CHECK(ll::parse_context_sizes("300") == std::vector<int64_t>{300});

  for (const std::string bad : {"", "k", "1.5k", "-1", "0", "0k", "1kk", "abc", "1 k", " 1k", "1m",
                                "1e3", "99999999999999999999"}) {
    INFO("'" << bad << "'");
    const std::string msg = error_of([&] { ll::parse_context_size(bad); });
    CHECK(contains(msg, "'" + bad + "'"));
  }
  CHECK(contains(error_of([&] { ll::parse_context_sizes("1k,,2k"); }), "''"));
  CHECK(contains(error_of([&] { ll::parse_context_sizes("1k,"); }), "''"));
  CHECK(contains(error_of([&] { ll::parse_context_sizes("1k,1024"); }), "listed twice"));
}

TEST_CASE("the trial seed and draws follow the documented derivation") {
  for (uint64_t seed : {0ull, 7ull, 123456789ull}) {
    for (int64_t c : {256, 1024}) {
      for (int64_t t : {0, 1, 9}) {
        const uint64_t expected = ll::derive_seed(ll::derive_seed(seed, uint64_t(c)), uint64_t(t));
        CHECK(ll::passkey_trial_seed(seed, c, t) == expected);
      }
    }
  }
  const ll::Tokenizer tok(kKjv + "/tokenizer.model");
  const uint64_t s = ll::passkey_trial_seed(3, 512, 4);
  const ll::PasskeyPrompt p = ll::make_passkey_prompt(tok, 512, s);
  ll::SplitMix64 rng{s};
  CHECK(p.key == 1 + int64_t(rng.below(50000)));
  CHECK(p.depth_draw == rng.uniform());
  CHECK(p.key_after == std::min(p.filler_repeats,
                                int64_t(std::floor(p.depth_draw * double(p.filler_repeats + 1)))));

  // Keys cover [1, 50000] and nothing else (the draw alone, no prompt needed).
  int64_t lo = 1 << 30, hi = 0;
  for (int64_t t = 0; t < 20000; ++t) {
    ll::SplitMix64 r{ll::passkey_trial_seed(11, 1024, t)};
    const int64_t key = 1 + int64_t(r.below(50000));
    lo = std::min(lo, key);
    hi = std::max(hi, key);
  }
  CHECK(lo >= 1);
  CHECK(lo < 50);
  CHECK(hi <= 50000);
  CHECK(hi > 49950);
}

TEST_CASE("a prompt fills its token budget, one more repetition would not fit") {
  for (const std::string& model : {kKjv, kTinyLlama}) {
    const ll::Tokenizer tok(model + "/tokenizer.model");
    for (int64_t c : {int64_t(200), int64_t(256), int64_t(1000), int64_t(4096), int64_t(8192)}) {
      for (int64_t t = 0; t < 4; ++t) {
        INFO(model << " context " << c << " trial " << t);
        const ll::PasskeyPrompt p =
            ll::make_passkey_prompt(tok, c, ll::passkey_trial_seed(5, c, t));
        // The ids are BOS + the text's encoding, and the text is the documented layout.
        REQUIRE(!p.ids.empty());
        CHECK(p.ids.front() == tok.bos_id());
        CHECK(std::vector<int32_t>(p.ids.begin() + 1, p.ids.end()) == encode32(tok, p.text));
        CHECK(p.text == ll::passkey_prompt_text(p.key, p.filler_repeats, p.key_after));
        CHECK(squeezed(tok.decode(std::vector<int>(p.ids.begin() + 1, p.ids.end()))) ==
              squeezed(p.text));

        CHECK(int64_t(p.ids.size()) <= c);
        const int64_t n1 = p.filler_repeats + 1;
        const int64_t more = token_count(
            tok, ll::passkey_prompt_text(p.key, n1, ll::passkey_key_after(p.depth_draw, n1)));
        CHECK(more > c);
        // A repetition is 20 to 60 tokens (by vocabulary): the budget is used up to less than
        // one of them.
        CHECK(more - int64_t(p.ids.size()) < 80);
        CHECK(c - int64_t(p.ids.size()) < 80);
        if (c >= 1000) CHECK(p.filler_repeats > 10);
      }
    }
  }
}

TEST_CASE("the key line appears once, after key_after repetitions, at the recorded depth") {
  const ll::Tokenizer tok(kKjv + "/tokenizer.model");
  std::set<int64_t> depths_seen;
  int64_t n_seen = -1;
  for (int64_t t = 0; t < 120; ++t) {
    const ll::PasskeyPrompt p =
        ll::make_passkey_prompt(tok, 400, ll::passkey_trial_seed(1, 400, t));
    INFO("trial " << t << " key " << p.key);
    const std::string line = ll::passkey_key_line(p.key);
    CHECK(line == "The pass key is " + std::to_string(p.key) + ". Remember it. " +
                      std::to_string(p.key) + " is the pass key.");
    REQUIRE(count_of(p.text, line) == 1);
    CHECK(count_of(p.text, "pass key") == 4);  // twice in the key line, twice in the question
    const size_t at = p.text.find(line);
    const std::string before = p.text.substr(0, at), after = p.text.substr(at + line.size());
    CHECK(count_of(before, ll::kPasskeyFiller) == p.key_after);
    CHECK(count_of(after, ll::kPasskeyFiller) == p.filler_repeats - p.key_after);
    CHECK(p.text.starts_with(std::string(ll::kPasskeyTask) + "\n"));
    CHECK(p.text.ends_with(std::string("\n") + ll::kPasskeyQuestion));
    REQUIRE(p.filler_repeats > 0);
    CHECK(p.depth == doctest::Approx(double(p.key_after) / double(p.filler_repeats)));
    CHECK((p.depth >= 0.0 && p.depth <= 1.0));
    depths_seen.insert(p.key_after);
    if (n_seen < 0) n_seen = p.filler_repeats;
  }
  // Uniform over the n + 1 places: with 120 draws over ~15 places both ends occur.
  CHECK(depths_seen.count(0) == 1);
  CHECK(depths_seen.count(n_seen) == 1);
  CHECK(depths_seen.size() >= size_t(n_seen / 2));
}

TEST_CASE("the same seed gives the same prompts, other seeds other prompts") {
  const ll::Tokenizer tok(kKjv + "/tokenizer.model");
  std::set<int64_t> keys;
  std::set<std::string> texts;
  for (uint64_t seed = 0; seed < 8; ++seed) {
    const ll::PasskeyPrompt a =
        ll::make_passkey_prompt(tok, 512, ll::passkey_trial_seed(seed, 512, 0));
    const ll::PasskeyPrompt b =
        ll::make_passkey_prompt(tok, 512, ll::passkey_trial_seed(seed, 512, 0));
    CHECK(a.ids == b.ids);
    CHECK(a.key == b.key);
    CHECK(a.depth == b.depth);
    keys.insert(a.key);
    texts.insert(a.text);
  }
  CHECK(keys.size() == 8);
  CHECK(texts.size() == 8);
  // Trials and context sizes draw from their own streams.
  CHECK(ll::passkey_trial_seed(0, 512, 0) != ll::passkey_trial_seed(0, 512, 1));
  CHECK(ll::passkey_trial_seed(0, 512, 0) != ll::passkey_trial_seed(0, 1024, 0));
  CHECK(ll::passkey_trial_seed(0, 512, 0) != ll::passkey_trial_seed(1, 512, 0));
}

TEST_CASE("the answer ids are the key's encoding without BOS") {
  for (const std::string& model : {kKjv, kTinyLlama}) {
    const ll::Tokenizer tok(model + "/tokenizer.model");
    for (int64_t t = 0; t < 6; ++t) {
      const ll::PasskeyPrompt p =
          ll::make_passkey_prompt(tok, 300, ll::passkey_trial_seed(2, 300, t));
      CHECK(p.answer_ids == encode32(tok, std::to_string(p.key)));
      CHECK(!p.answer_ids.empty());
      CHECK(p.answer_ids.front() != tok.bos_id());
      CHECK(tok.decode(std::vector<int>(p.answer_ids.begin(), p.answer_ids.end())) ==
            std::to_string(p.key));
    }
  }
}

TEST_CASE("a context too small for the prompt without filler is an error naming both sizes") {
  const ll::Tokenizer tok(kKjv + "/tokenizer.model");
  const ll::PasskeyPrompt p = ll::make_passkey_prompt(tok, 100000, 1);  // any: its base size
  const int64_t base = token_count(tok, ll::passkey_prompt_text(p.key, 0, 0));
  const std::string msg = error_of([&] { ll::make_passkey_prompt(tok, base - 1, 1); });
  CHECK(contains(msg, std::to_string(base - 1)));
  CHECK(contains(msg, std::to_string(base)));
  const ll::PasskeyPrompt tight = ll::make_passkey_prompt(tok, base, 1);
  CHECK(tight.filler_repeats == 0);
  CHECK(int64_t(tight.ids.size()) == base);
  CHECK(p.filler_repeats > 1000);  // 100000 tokens
}

TEST_CASE("scoring is an exact match of every id") {
  const std::vector<int32_t> answer{29871, 29896, 29906, 29941};
  CHECK(ll::passkey_correct(answer, answer));
  for (size_t i = 0; i < answer.size(); ++i) {
    std::vector<int32_t> wrong = answer;
    wrong[i] += 1;
    CHECK_FALSE(ll::passkey_correct(wrong, answer));
  }
  CHECK_FALSE(ll::passkey_correct(std::vector<int32_t>(answer.begin(), answer.end() - 1), answer));
  std::vector<int32_t> longer = answer;
  longer.push_back(2);
  CHECK_FALSE(ll::passkey_correct(longer, answer));
  CHECK_FALSE(ll::passkey_correct({}, answer));
}

TEST_CASE("the run loop scores, counts and reports every trial") {
  const ll::Tokenizer tok(kKjv + "/tokenizer.model");
  ll::PasskeyOptions options;
  options.context_sizes = {256, 600};
  options.trials = 3;
  options.seed = 42;
  // Reads the key back from the prompt; wrong (last id changed) on every third call.
  int64_t calls = 0;
  std::vector<int64_t> progress_calls;
  const ll::PasskeyGenerator answerer = [&](std::span<const int32_t> prompt, int64_t n_new) {
    std::vector<int32_t> ids = encode32(tok, std::to_string(key_in(tok, prompt)));
    REQUIRE(int64_t(ids.size()) == n_new);
    if (calls++ % 3 == 2) ids.back() = ids.back() == 5 ? 6 : 5;
    return ids;
  };
  const auto results = ll::run_passkey(
      tok, options, answerer, [&](const ll::PasskeyContextResult& r, const ll::PasskeyTrial& t) {
        progress_calls.push_back(r.context_size * 100 + t.trial);
      });
  CHECK(calls == 6);
  CHECK(progress_calls == std::vector<int64_t>{25600, 25601, 25602, 60000, 60001, 60002});
  REQUIRE(results.size() == 2);
  for (const ll::PasskeyContextResult& r : results) {
    REQUIRE(r.trials.size() == 3);
    CHECK(r.correct() == 2);
    CHECK(r.accuracy() == doctest::Approx(2.0 / 3.0));
    double sum = 0.0;
    for (size_t t = 0; t < 3; ++t) {
      const ll::PasskeyTrial& trial = r.trials[t];
      CHECK(trial.trial == int64_t(t));
      CHECK(trial.correct == (t != 2));
      CHECK(trial.correct == (trial.generated == trial.prompt.answer_ids));
      // The same prompt as built directly from the documented seed.
      const ll::PasskeyPrompt direct = ll::make_passkey_prompt(
          tok, r.context_size, ll::passkey_trial_seed(42, r.context_size, int64_t(t)));
      CHECK(trial.prompt.ids == direct.ids);
      CHECK(trial.generated_text ==
            tok.decode(std::vector<int>(trial.generated.begin(), trial.generated.end())));
      if (trial.correct) CHECK(trial.generated_text == std::to_string(trial.prompt.key));
      CHECK(int64_t(trial.prompt.ids.size()) <= r.context_size);
      sum += double(trial.prompt.ids.size());
    }
    CHECK(r.mean_prompt_tokens() == doctest::Approx(sum / 3.0));
  }

  const std::string table = ll::format_passkey_table(results);
  CHECK(contains(table, "context"));
  CHECK(contains(table, "accuracy"));
  CHECK(contains(table, fmt::format("{:.1f}", results[1].mean_prompt_tokens())));
  CHECK(contains(table, "66.7%"));
  CHECK(count_of(table, "\n") == 3);

  const nlohmann::json j = ll::passkey_results_json(results);
  REQUIRE(j.size() == 2);
  CHECK(j[1]["context_size"] == 600);
  CHECK(j[1]["trials"] == 3);
  CHECK(j[1]["correct"] == 2);
  CHECK(j[1]["accuracy"].get<double>() == doctest::Approx(2.0 / 3.0));
  CHECK(j[1]["prompt_tokens_mean"].get<double>() ==
        doctest::Approx(results[1].mean_prompt_tokens()));
  const nlohmann::json& d = j[1]["details"][2];
  const ll::PasskeyTrial& t2 = results[1].trials[2];
  CHECK(d["key"] == t2.prompt.key);
  CHECK(d["depth"].get<double>() == t2.prompt.depth);
  CHECK(d["prompt_tokens"] == t2.prompt.ids.size());
  CHECK(d["answer_ids"].get<std::vector<int32_t>>() == t2.prompt.answer_ids);
  CHECK(d["generated_ids"].get<std::vector<int32_t>>() == t2.generated);
  CHECK(d["text"] == t2.generated_text);
  CHECK(d["correct"] == false);

  // A generator that does not return the answer's length is caught, as are 0 trials.
  const ll::PasskeyGenerator short_one = [](std::span<const int32_t>, int64_t) {
    return std::vector<int32_t>{5};
  };
  ll::PasskeyOptions one = options;
  one.context_sizes = {256};
  CHECK(contains(error_of([&] { ll::run_passkey(tok, one, short_one); }), "returned 1 tokens"));
  one.trials = 0;
  CHECK(contains(error_of([&] { ll::run_passkey(tok, one, answerer); }), "--trials 0"));
}

TEST_CASE("end to end on kjv-tiny: the generated ids are argmax of the full forward pass") {
  const ll::Tokenizer tok(kKjv + "/tokenizer.model");
  auto files = ll::open_model_files(kKjv);
  ll::CpuBackend backend;
  ll::LlamaModel model(backend, ll::load_llama_weights(*files));
  const double rope_scale = 2.0;  // 256 tokens on a model pretrained at 128

  ll::PasskeyOptions options;
  options.context_sizes = {256};
  options.trials = 2;
  options.seed = 9;
  const auto results = ll::run_passkey(
      tok, options, ll::greedy_generator(model, ll::linear_rope_scaling(rope_scale)));
  REQUIRE(results.size() == 1);
  int64_t correct = 0;
  for (const ll::PasskeyTrial& t : results[0].trials) {
    INFO("trial " << t.trial << " key " << t.prompt.key << " generated '" << t.generated_text
                  << "'");
    // Reference: grow the sequence one argmax (lowest id on ties) at a time, no cache.
    std::vector<int32_t> seq = t.prompt.ids;
    std::vector<int32_t> expected;
    ll::ForwardSpec spec;
    spec.rope = ll::linear_rope_scaling(rope_scale);
    const int64_t v = model.config().vocab_size;
    for (size_t i = 0; i < t.prompt.answer_ids.size(); ++i) {
      const std::vector<float> logits = model.logits(seq, spec);  // [N, V]
      const float* last = logits.data() + (seq.size() - 1) * size_t(v);
      const int32_t next = int32_t(std::max_element(last, last + v) - last);
      expected.push_back(next);
      seq.push_back(next);
    }
    CHECK(t.generated == expected);
    CHECK(t.generated.size() == t.prompt.answer_ids.size());
    CHECK(t.correct == (expected == t.prompt.answer_ids));
    CHECK(t.generated_text == tok.decode(std::vector<int>(expected.begin(), expected.end())));
    correct += t.correct ? 1 : 0;
  }
  CHECK(results[0].correct() == correct);
  CHECK(results[0].accuracy() == doctest::Approx(double(correct) / 2.0));
}
