#include "model/generation.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>

#include "common/error.h"
#include "common/random.h"

namespace ll {

namespace {

void check_sampling(const SamplingOptions& o) {
  LL_CHECK(std::isfinite(o.temperature) && o.temperature >= 0.0,
           "sampling temperature must be a finite number >= 0 (0: greedy), got {}", o.temperature);
  LL_CHECK(std::isfinite(o.top_p) && o.top_p > 0.0 && o.top_p <= 1.0,
           "top-p must be in (0, 1], got {}", o.top_p);
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int32_t sample_token(std::span<const float> logits, const SamplingOptions& options,
                     uint64_t& state) {
  check_sampling(options);
  LL_CHECK(!logits.empty(), "sampling from empty logits");
  // -inf is a token ruled out; NaN or +inf means the forward pass broke down.
  size_t best = 0;
  for (size_t i = 0; i < logits.size(); ++i) {
    LL_CHECK(!std::isnan(logits[i]) && logits[i] != INFINITY,
             "the logit of token {} is {}: the model's output is not finite", i, logits[i]);
    if (logits[i] > logits[best]) best = i;  // strict: the lowest id wins ties
  }
  LL_CHECK(std::isfinite(logits[best]), "every logit is -inf: no token can be sampled");
  if (options.temperature == 0.0) return int32_t(best);

  // softmax(logits / T) in double, unnormalised (the largest term is 1).
  std::vector<double> p(logits.size());  // [V]
  const double top = double(logits[best]);
  double total = 0.0;
  for (size_t i = 0; i < logits.size(); ++i) {
    p[i] = std::exp((double(logits[i]) - top) / options.temperature);
    total += p[i];
  }
  // Nucleus: the most likely tokens (lowest id first among equals) until their mass reaches
  // top_p; with top_p 1 every token stays and the order does not matter.
  std::vector<int32_t> order(logits.size());  // [V] candidate ids
  std::iota(order.begin(), order.end(), 0);
  size_t kept = order.size();
  double kept_mass = total;
  if (options.top_p < 1.0) {
    std::stable_sort(order.begin(), order.end(),
                     [&](int32_t a, int32_t b) { return p[size_t(a)] > p[size_t(b)]; });
    kept_mass = 0.0;
    for (kept = 0; kept < order.size();) {
      kept_mass += p[size_t(order[kept++])];
      if (kept_mass >= options.top_p * total) break;
    }
  }
  SplitMix64 rng{state};
  const double u = rng.uniform() * kept_mass;
  state = rng.state;
  double acc = 0.0;
  for (size_t i = 0; i < kept; ++i) {
    acc += p[size_t(order[i])];
    if (u < acc) return order[i];
  }
  // Rounding left u at the very top of the mass: the last kept token with any mass.
  for (size_t i = kept; i-- > 0;) {
    if (p[size_t(order[i])] > 0.0) return order[i];
  }
  return int32_t(best);
}

GenerationResult generate(LlamaModel& model, std::span<const int32_t> prompt,
                          const GenerationOptions& options,
                          const std::function<void(int32_t)>& on_token) {
  check_sampling(options.sampling);
  const int64_t vocab = model.config().vocab_size;
  LL_CHECK(!prompt.empty(), "generation needs a prompt of at least 1 token (BOS)");
  LL_CHECK(options.max_new_tokens >= 0, "max new tokens must be >= 0, got {}",
           options.max_new_tokens);
  for (size_t i = 0; i < prompt.size(); ++i) {
    LL_CHECK(prompt[i] >= 0 && prompt[i] < vocab,
             "prompt token {} at position {} is outside the model's vocabulary [0, {})", prompt[i],
             i, vocab);
  }
  GenerationResult r;
  if (options.max_new_tokens == 0) return r;
  ForwardSpec spec;
  spec.rope = options.rope;
  LlamaModel::KvCache cache = model.make_kv_cache(int64_t(prompt.size()) + options.max_new_tokens);
  uint64_t sampler = options.sampling.seed;
  // Each step feeds the token sampled last; the final token is never fed back.
  auto step = [&](std::span<const int32_t> tokens) {
    const std::vector<float> logits = model.forward_cached(tokens, cache, spec);  // [V]
    const int32_t next = sample_token(logits, options.sampling, sampler);
    r.tokens.push_back(next);
    if (on_token) on_token(next);
    r.stopped = std::find(options.stop_tokens.begin(), options.stop_tokens.end(), next) !=
                options.stop_tokens.end();
  };
  const auto t0 = std::chrono::steady_clock::now();
  step(prompt);
  r.prefill_s = seconds_since(t0);
  const auto t1 = std::chrono::steady_clock::now();
  while (!r.stopped && int64_t(r.tokens.size()) < options.max_new_tokens) {
    const int32_t last = r.tokens.back();
    step(std::span<const int32_t>(&last, 1));
  }
  r.decode_s = seconds_since(t1);
  return r;
}

}  // namespace ll
