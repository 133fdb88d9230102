// Generation with a key/value cache (CPU backend): cached passes reproduce the full forward's
// logits at every position (prefill in one pass or in chunks, then token by token; GQA, LoRA,
// position interpolation), greedy generation follows the full forward's argmax, and the
// sampler's statistics, nucleus, determinism and error cases.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/random.h"
#include "kernels/cpu/cpu_backend.h"
#include "model/formats/adapter_io.h"
#include "model/formats/tensor_source.h"
#include "model/generation.h"
#include "model/llama_model.h"
#include "model/llama_weights.h"
#include "tests/model/model_fixtures.h"
#include "tests/test_paths.h"

namespace {

using ll::LlamaModel;
using ll::test::source_path;

// max |out - ref| / max |ref| over one row of logits (their scale is set by the largest).
double relative_error(const float* out, const float* ref, size_t n) {
  double max_diff = 0, max_ref = 0;
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(out[i])) return INFINITY;
    max_diff = std::max(max_diff, std::fabs(double(out[i]) - double(ref[i])));
    max_ref = std::max(max_ref, std::fabs(double(ref[i])));
  }
  return max_diff / max_ref;
}

std::vector<int32_t> random_tokens(size_t n, int64_t vocab, uint64_t seed) {
  ll::SplitMix64 rng{seed};
  std::vector<int32_t> t(n);
  for (int32_t& x : t) x = int32_t(rng.below(uint64_t(vocab)));
  return t;
}

int32_t argmax(const float* row, int64_t v) {
  return int32_t(std::max_element(row, row + v) - row);
}

// A model on the CPU backend with what it was built from.
struct TestModel {
  std::string name;
  ll::CpuBackend backend;
  std::unique_ptr<LlamaModel> model;
};

std::unique_ptr<TestModel> tiny_llama(bool with_adapter) {
  auto m = std::make_unique<TestModel>();
  m->name = with_adapter ? "tiny_llama + PEFT adapter" : "tiny_llama";
  auto files = ll::open_model_files(source_path("tests/fixtures/tiny_llama"));
  ll::ModelSetup setup;
  ll::AdapterDir adapter;
  if (with_adapter) {
    adapter = ll::read_adapter_dir(source_path("tests/fixtures/tiny_llama_peft_adapter"));
    setup.lora = adapter.lora;
  }
  m->model = std::make_unique<LlamaModel>(m->backend, ll::load_llama_weights(*files), setup);
  if (with_adapter) m->model->load_adapter(adapter);
  return m;
}

// Random weights with one key/value head for all four query heads.
std::unique_ptr<TestModel> random_mqa_model() {
  auto m = std::make_unique<TestModel>();
  m->name = "random, 4 heads / 1 kv head";
  ll::LlamaConfig c = ll::test::tiny_config();
  c.num_key_value_heads = 1;
  m->model = std::make_unique<LlamaModel>(m->backend, ll::random_llama_weights(c, 21, 0.2f));
  return m;
}

// Feeds `tokens` through a fresh cache in chunks of the given sizes (the last repeated) and
// checks every position's logits against the full forward.
void check_cached_matches_full(LlamaModel& model, const std::vector<int32_t>& tokens,
                               const std::vector<size_t>& chunks, double rope_scale) {
  const int64_t v = model.config().vocab_size;
  ll::ForwardSpec spec;
  spec.rope = ll::linear_rope_scaling(rope_scale);
  const std::vector<float> full = model.logits(tokens, spec);  // [T, V]
  LlamaModel::KvCache cache = model.make_kv_cache(int64_t(tokens.size()));
  size_t pos = 0;
  for (size_t c = 0; pos < tokens.size(); ++c) {
    const size_t n = std::min(chunks[std::min(c, chunks.size() - 1)], tokens.size() - pos);
    const std::span<const int32_t> chunk(tokens.data() + pos, n);
    const bool all = c % 2 == 0;  // alternate: every row, then the last row only
    const std::vector<float> got = model.forward_cached(chunk, cache, spec, all);
    REQUIRE(got.size() == size_t(all ? n : 1) * size_t(v));
    for (size_t r = 0; r < (all ? n : 1); ++r) {
      const size_t row = all ? pos + r : pos + n - 1;
      INFO("position ", row, ", chunk ", c, " of ", n, " tokens, rope scale ", rope_scale);
      CHECK(relative_error(&got[r * size_t(v)], &full[row * size_t(v)], size_t(v)) <= 1e-5);
    }
    pos += n;
    CHECK(cache.length == int64_t(pos));
  }
}

}  // namespace

TEST_CASE("cached forward passes give the full forward's logits at every position") {
  std::vector<std::unique_ptr<TestModel>> models;
  models.push_back(tiny_llama(false));
  models.push_back(tiny_llama(true));
  models.push_back(random_mqa_model());
  for (auto& m : models) {
    const int64_t vocab = m->model->config().vocab_size;
    const std::vector<int32_t> tokens = random_tokens(40, vocab, 1234);
    for (const double scale : {1.0, 2.0}) {
      INFO(m->name, ", rope scale ", scale);
      // The prompt in one pass, then one token at a time.
      check_cached_matches_full(*m->model, tokens, {13, 1}, scale);
      // The prompt prefilled in several uneven chunks.
      check_cached_matches_full(*m->model, tokens, {5, 1, 9, 3, 7, 2, 6}, scale);
    }
  }
}

TEST_CASE("the cache's K/V make a difference: a fresh cache at the same positions differs") {
  // Guards against a cached pass that ignores the cached rows: the second token's logits with
  // the first token cached must differ from those of the second token alone.
  auto m = tiny_llama(false);
  const std::vector<int32_t> tokens = {1, 77, 300};
  ll::ForwardSpec spec;
  LlamaModel::KvCache a = m->model->make_kv_cache(3);
  m->model->forward_cached(std::span(tokens.data(), 2), a, spec);
  const std::vector<float> with_past =
      m->model->forward_cached(std::span(tokens.data() + 2, 1), a, spec);
  LlamaModel::KvCache b = m->model->make_kv_cache(3);
  const std::vector<float> alone =
      m->model->forward_cached(std::span(tokens.data() + 2, 1), b, spec);
  CHECK(relative_error(with_past.data(), alone.data(), with_past.size()) > 1e-3);
}

TEST_CASE("the key/value cache refuses to overflow, naming capacity and length") {
  auto m = tiny_llama(false);
  ll::ForwardSpec spec;
  LlamaModel::KvCache cache = m->model->make_kv_cache(4);
  const std::vector<int32_t> three = {1, 5, 6}, two = {7, 8};
  m->model->forward_cached(three, cache, spec);
  CHECK_THROWS_WITH_AS(m->model->forward_cached(two, cache, spec),
                       doctest::Contains("holds 3 of 4 tokens"), ll::Error);
  CHECK(cache.length == 3);  // a refused call leaves the cache as it was
  CHECK_THROWS_AS(m->model->make_kv_cache(0), ll::Error);
  spec.attn_mode = ll::AttnMode::S2;
  spec.group_size = 2;
  CHECK_THROWS_WITH_AS(m->model->forward_cached(std::span(two.data(), 1), cache, spec),
                       doctest::Contains("dense"), ll::Error);
  spec = {};
  const std::vector<int32_t> bad = {600};  // vocab 512
  CHECK_THROWS_WITH_AS(m->model->forward_cached(bad, cache, spec), doctest::Contains("600"),
                       ll::Error);
}

TEST_CASE("greedy generation follows the full forward's argmax at every step") {
  std::vector<std::unique_ptr<TestModel>> models;
  models.push_back(tiny_llama(false));
  models.push_back(tiny_llama(true));
  models.push_back(random_mqa_model());
  for (auto& m : models) {
    for (const double scale : {1.0, 2.0}) {
      INFO(m->name, ", rope scale ", scale);
      LlamaModel& model = *m->model;
      const int64_t v = model.config().vocab_size;
      std::vector<int32_t> prompt = random_tokens(9, v, 99);
      prompt[0] = 1;  // BOS
      ll::GenerationOptions o;
      o.max_new_tokens = 12;
      o.rope = ll::linear_rope_scaling(scale);
      std::vector<int32_t> streamed;
      const ll::GenerationResult r =
          ll::generate(model, prompt, o, [&](int32_t t) { streamed.push_back(t); });
      REQUIRE(r.tokens.size() == 12);
      CHECK(streamed == r.tokens);
      CHECK_FALSE(r.stopped);
      CHECK(r.prefill_s >= 0.0);
      CHECK(r.decode_s >= 0.0);
      ll::ForwardSpec spec;
      spec.rope = ll::linear_rope_scaling(scale);
      std::vector<int32_t> seq = prompt;
      for (size_t t = 0; t < r.tokens.size(); ++t) {
        const std::vector<float> full = model.logits(seq, spec);  // [len, V]
        CHECK(r.tokens[t] == argmax(&full[(seq.size() - 1) * size_t(v)], v));
        seq.push_back(r.tokens[t]);
      }
      // A stop token ends generation right after it appears, and is kept.
      o.stop_tokens = {r.tokens[6], r.tokens[4]};  // whichever comes first
      const size_t first = size_t(std::find_first_of(r.tokens.begin(), r.tokens.end(),
                                                     o.stop_tokens.begin(), o.stop_tokens.end()) -
                                  r.tokens.begin());
      const ll::GenerationResult stopped = ll::generate(model, prompt, o);
      CHECK(stopped.stopped);
      CHECK(stopped.tokens ==
            std::vector<int32_t>(r.tokens.begin(), r.tokens.begin() + long(first) + 1));
    }
  }
}

TEST_CASE("sampled generation: same seed, same tokens; another seed, other tokens") {
  auto m = tiny_llama(false);
  const std::vector<int32_t> prompt = {1, 40, 41, 42};
  ll::GenerationOptions o;
  o.max_new_tokens = 16;
  o.sampling.temperature = 1.5;
  o.sampling.top_p = 0.95;
  o.sampling.seed = 5;
  const auto a = ll::generate(*m->model, prompt, o), b = ll::generate(*m->model, prompt, o);
  CHECK(a.tokens == b.tokens);
  o.sampling.seed = 6;
  CHECK(ll::generate(*m->model, prompt, o).tokens != a.tokens);
  o.max_new_tokens = 0;
  CHECK(ll::generate(*m->model, prompt, o).tokens.empty());
}

TEST_CASE("generate rejects bad prompts and options") {
  auto m = tiny_llama(false);
  ll::GenerationOptions o;
  CHECK_THROWS_WITH_AS(ll::generate(*m->model, std::vector<int32_t>{}, o),
                       doctest::Contains("prompt"), ll::Error);
  CHECK_THROWS_WITH_AS(ll::generate(*m->model, std::vector<int32_t>{1, 512}, o),
                       doctest::Contains("512"), ll::Error);
  o.sampling.top_p = 0.0;
  CHECK_THROWS_WITH_AS(ll::generate(*m->model, std::vector<int32_t>{1}, o),
                       doctest::Contains("top-p"), ll::Error);
}

TEST_CASE("sample_token: greedy takes the lowest id among equal maxima") {
  uint64_t state = 17;
  const std::vector<float> logits = {1.0f, 3.0f, 3.0f, 2.0f, -INFINITY};
  CHECK(ll::sample_token(logits, {}, state) == 1);
  CHECK(state == 17);  // greedy draws nothing
  const std::vector<float> last = {0.0f, -1.0f, 5.0f};
  CHECK(ll::sample_token(last, {}, state) == 2);
}

TEST_CASE("sample_token: frequencies follow softmax(logits / T)") {
  const std::vector<float> logits = {1.0f, 0.5f, 0.0f, -0.5f, 2.0f, -INFINITY};
  const double temperature = 0.8;
  const int draws = 20000;
  // Pearson's chi-square of the counts against softmax(logits / t).
  auto chi_square = [&](const std::vector<int>& counts, double t) {
    std::vector<double> p;
    double z = 0;
    for (float l : logits) z += std::exp(double(l) / t);
    double chi = 0;
    for (size_t i = 0; i < logits.size(); ++i) {
      const double expected = draws * std::exp(double(logits[i]) / t) / z;
      if (expected == 0) {
        CHECK(counts[i] == 0);  // a -inf logit is never drawn
        continue;
      }
      chi += (counts[i] - expected) * (counts[i] - expected) / expected;
    }
    return chi;
  };
  for (const uint64_t seed : {3ull, 1000003ull}) {
    ll::SamplingOptions o;
    o.temperature = temperature;
    uint64_t state = seed;
    std::vector<int> counts(logits.size(), 0);
    for (int i = 0; i < draws; ++i) counts[size_t(ll::sample_token(logits, o, state))] += 1;
    // 4 degrees of freedom (5 live tokens): P(chi2 > 18.47) = 0.001.
    CHECK(chi_square(counts, temperature) < 18.47);
    // The same counts are far from the distribution at another temperature: the test can fail.
    CHECK(chi_square(counts, 1.0) > 100.0);
  }
}

TEST_CASE("sample_token: top-p keeps only the nucleus, in proportion") {
  // Probabilities 0.5, 0.3, 0.15, 0.05 at temperature 1 (token order shuffled).
  const std::vector<float> logits = {std::log(0.15f), std::log(0.5f), std::log(0.05f),
                                     std::log(0.3f)};
  ll::SamplingOptions o;
  o.temperature = 1.0;
  o.top_p = 0.7;  // 0.5 < 0.7 <= 0.5 + 0.3: tokens 1 and 3
  uint64_t state = 11;
  std::vector<int> counts(4, 0);
  const int draws = 8000;
  for (int i = 0; i < draws; ++i) counts[size_t(ll::sample_token(logits, o, state))] += 1;
  CHECK(counts[0] == 0);
  CHECK(counts[2] == 0);
  // Renormalised inside the nucleus: 0.5 / 0.8 = 0.625 (binomial sd ~0.0054).
  CHECK(std::fabs(double(counts[1]) / draws - 0.625) < 0.025);
  CHECK(counts[1] + counts[3] == draws);
  o.top_p = 0.4;  // the most likely token alone
  for (int i = 0; i < 100; ++i) CHECK(ll::sample_token(logits, o, state) == 1);
  o.top_p = 1.0;  // every token can appear
  std::vector<int> all(4, 0);
  for (int i = 0; i < draws; ++i) all[size_t(ll::sample_token(logits, o, state))] += 1;
  CHECK(std::fabs(double(all[2]) / draws - 0.05) < 0.012);
}

TEST_CASE("sample_token: the same seed gives the same tokens") {
  const std::vector<float> logits = {0.3f, 0.1f, 0.2f, 0.25f, 0.0f, 0.15f};
  ll::SamplingOptions o;
  o.temperature = 1.0;
  o.top_p = 0.9;
  auto draw = [&](uint64_t seed) {
    uint64_t state = seed;
    std::vector<int32_t> out;
    for (int i = 0; i < 64; ++i) out.push_back(ll::sample_token(logits, o, state));
    return out;
  };
  CHECK(draw(42) == draw(42));
  CHECK(draw(42) != draw(43));
}

TEST_CASE("sample_token: NaN logits and options out of range are errors") {
  uint64_t state = 0;
  std::vector<float> logits = {0.0f, 1.0f, NAN};
  CHECK_THROWS_WITH_AS(ll::sample_token(logits, {}, state), doctest::Contains("token 2"),
                       ll::Error);
  logits[2] = INFINITY;
  CHECK_THROWS_AS(ll::sample_token(logits, {}, state), ll::Error);
  logits[2] = 0.5f;
  const std::vector<float> dead = {-INFINITY, -INFINITY};
  CHECK_THROWS_AS(ll::sample_token(dead, {}, state), ll::Error);
  CHECK_THROWS_AS(ll::sample_token({}, {}, state), ll::Error);
  for (const auto& [t, p] : std::vector<std::pair<double, double>>{
           {-0.1, 1.0}, {NAN, 1.0}, {1.0, 0.0}, {1.0, 1.5}, {1.0, NAN}, {INFINITY, 1.0}}) {
    ll::SamplingOptions o;
    o.temperature = t;
    o.top_p = p;
    INFO("temperature ", t, ", top_p ", p);
    CHECK_THROWS_AS(ll::sample_token(logits, o, state), ll::Error);
  }
}
