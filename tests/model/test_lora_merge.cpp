// merge_adapter: the merged model's logits equal base + adapter (LoRA applied unmerged, trained
// tensors loaded) on the CPU backend, for PEFT's fixture adapter and for random adapters with
// every target module and trained embeddings/norms; tied embeddings; and the errors for an
// adapter of another base model, which leave the weights untouched.
#include <doctest/doctest.h>

#include <random>

#include "common/error.h"
#include "kernels/cpu/cpu_backend.h"
#include "model/formats/adapter_io.h"
#include "model/llama_model.h"
#include "model/llama_weights.h"
#include "model/lora_merge.h"
#include "tests/kernels/kernel_test_util.h"
#include "tests/model/model_fixtures.h"
#include "tests/test_paths.h"

using ll::AdapterDir;
using ll::HostTensor;
using ll::LlamaWeights;

namespace {

LlamaWeights load(const std::string& dir) {
  return ll::load_llama_weights(*ll::open_model_files(ll::test::source_path(dir)));
}

std::vector<int32_t> random_tokens(std::mt19937_64& rng, int64_t n, int64_t vocab) {
  std::uniform_int_distribution<int32_t> dist(0, int32_t(vocab - 1));
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (int32_t& x : t) x = dist(rng);
  return t;
}

// Logits [N, V] of base + adapter, the adapter applied the way ppl_eval --lora applies it.
std::vector<float> unmerged_logits(const LlamaWeights& base, const AdapterDir& adapter,
                                   const std::vector<int32_t>& tokens, double rope_scale) {
  ll::CpuBackend backend;
  ll::ModelSetup setup;
  if (!adapter.lora_tensors.empty()) setup.lora = adapter.lora;
  ll::LlamaModel model(backend, base, setup);
  model.load_adapter(adapter);
  ll::ForwardSpec spec;
  spec.rope = ll::linear_rope_scaling(rope_scale);
  return model.logits(tokens, spec);
}

std::vector<float> plain_logits(const LlamaWeights& w, const std::vector<int32_t>& tokens,
                                double rope_scale) {
  ll::CpuBackend backend;
  ll::LlamaModel model(backend, w);
  ll::ForwardSpec spec;
  spec.rope = ll::linear_rope_scaling(rope_scale);
  return model.logits(tokens, spec);
}

std::vector<double> to_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(double(a[i]) - double(b[i])));
  return m;
}

HostTensor random_tensor(std::vector<int64_t> shape, std::mt19937_64& rng, float std,
                         float mean = 0.0f) {
  HostTensor t{std::move(shape), {}};
  int64_t n = 1;
  for (int64_t d : t.shape) n *= d;
  std::normal_distribution<float> normal(mean, std);
  for (int64_t i = 0; i < n; ++i) t.values.push_back(normal(rng));
  return t;
}

// A random LoRA+ adapter for `config`: every target in `targets` on every layer (B non-zero),
// plus trained embeddings and norms.
AdapterDir random_adapter(const ll::LlamaConfig& c, std::vector<std::string> targets, int64_t rank,
                          std::mt19937_64& rng) {
  AdapterDir a;
  a.lora.rank = rank;
  a.lora.alpha = 32;
  a.lora.targets = std::move(targets);
  const int64_t D = c.hidden_size, KV = c.kv_dim(), F = c.intermediate_size;
  auto in_out = [&](const std::string& m) -> std::pair<int64_t, int64_t> {
    if (m == "k_proj" || m == "v_proj") return {D, KV};
    if (m == "gate_proj" || m == "up_proj") return {D, F};
    if (m == "down_proj") return {F, D};
    return {D, D};
  };
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    for (const std::string& m : a.lora.targets) {
      const auto [in, out] = in_out(m);
      a.lora_tensors[ll::peft_lora_key(l, m, 'A')] = random_tensor({rank, in}, rng, 0.1f);
      a.lora_tensors[ll::peft_lora_key(l, m, 'B')] = random_tensor({out, rank}, rng, 0.05f);
    }
  }
  a.trainable_params["model.embed_tokens.weight"] = random_tensor({c.vocab_size, D}, rng, 0.08f);
  a.trainable_params["model.norm.weight"] = random_tensor({D}, rng, 0.1f, 1.0f);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    a.trainable_params[fmt::format("model.layers.{}.input_layernorm.weight", l)] =
        random_tensor({D}, rng, 0.1f, 1.0f);
    a.trainable_params[fmt::format("model.layers.{}.post_attention_layernorm.weight", l)] =
        random_tensor({D}, rng, 0.1f, 1.0f);
  }
  return a;
}

// merged(base, adapter) logits == unmerged logits within the fp32 budget; the adapter matters.
void check_merge_equivalent(const LlamaWeights& base, const AdapterDir& adapter,
                            const std::vector<int32_t>& tokens, double rope_scale) {
  LlamaWeights merged = base;
  ll::merge_adapter(merged, adapter);
  const std::vector<float> ref = unmerged_logits(base, adapter, tokens, rope_scale);
  const std::vector<float> out = plain_logits(merged, tokens, rope_scale);
  ll::test::check_close(out, to_double(ref), 2e-5, 1e-5, 1e-5);
  // Not vacuous: the adapter moves the logits far beyond that budget.
  CHECK(max_abs_diff(ref, plain_logits(base, tokens, rope_scale)) > 1e-2);
}

}  // namespace

TEST_CASE("merge: PEFT's fixture adapter merged equals base + adapter") {
  const LlamaWeights base = load("tests/fixtures/tiny_llama");
  const AdapterDir adapter =
      ll::read_adapter_dir(ll::test::source_path("tests/fixtures/tiny_llama_peft_adapter"));
  REQUIRE(adapter.lora_tensors.size() == 16);
  for (uint64_t seed : ll::test::test_seeds()) {
    std::mt19937_64 rng(seed);
    check_merge_equivalent(base, adapter, random_tokens(rng, 96, 512), 1.0);
    // Factor 2 over 200 tokens: past max_position_embeddings 128.
    check_merge_equivalent(base, adapter, random_tokens(rng, 200, 512), 2.0);
  }
}

TEST_CASE("merge: random LoRA+ adapters on every linear layer, GQA") {
  const LlamaWeights base = load("tests/fixtures/tiny_llama");
  for (uint64_t seed : ll::test::test_seeds()) {
    std::mt19937_64 rng(seed);
    const AdapterDir adapter = random_adapter(base.config, ll::lora_target_names(), 4, rng);
    check_merge_equivalent(base, adapter, random_tokens(rng, 128, 512), 3.0);
    // Only the trained base tensors (a --lora-rank 0 run): a plain replacement.
    AdapterDir trained_only = adapter;
    trained_only.lora_tensors.clear();
    LlamaWeights merged = base;
    ll::merge_adapter(merged, trained_only);
    CHECK(merged.embed_tokens == adapter.trainable_params.at("model.embed_tokens.weight").values);
    CHECK(merged.layers[1].q_proj == base.layers[1].q_proj);
  }
}

TEST_CASE("merge: a tied model with a trained embedding stays tied: the LM head is trained too") {
  nlohmann::json cfg = ll::test::tiny_config_json();
  cfg["tie_word_embeddings"] = true;
  const LlamaWeights base =
      ll::random_llama_weights(ll::llama_config_from_json(cfg, "tied"), 7, 0.2f);
  std::mt19937_64 rng(8);
  const AdapterDir adapter = random_adapter(base.config, {"q_proj", "v_proj"}, 2, rng);
  LlamaWeights merged = base;
  ll::merge_adapter(merged, adapter);
  CHECK(merged.config.tie_word_embeddings);
  CHECK(merged.lm_head == adapter.trainable_params.at("model.embed_tokens.weight").values);
  check_merge_equivalent(base, adapter, random_tokens(rng, 40, 32), 1.0);
}

TEST_CASE("merge: an adapter of another base model is refused, weights untouched") {
  const LlamaWeights base = load("tests/fixtures/tiny_llama");
  const AdapterDir peft =
      ll::read_adapter_dir(ll::test::source_path("tests/fixtures/tiny_llama_peft_adapter"));
  auto expect_error = [&](const LlamaWeights& w, const AdapterDir& a,
                          std::vector<std::string> parts) {
    LlamaWeights copy = w;
    try {
      ll::merge_adapter(copy, a);
      FAIL("merge_adapter accepted a bad adapter");
    } catch (const ll::Error& e) {
      const std::string msg = e.what();
      INFO(msg);
      for (const std::string& p : parts) CHECK(ll::test::contains(msg, p));
    }
    CHECK(ll::test::weights_equal(copy, w));
  };

  SUBCASE("another model's shapes (tiny_llama_rope2: hidden 32, 1 layer)") {
    const LlamaWeights other = load("tests/fixtures/tiny_llama_rope2");
    AdapterDir layer0 = peft;  // layer 0 exists in both; its shapes do not fit
    std::erase_if(layer0.lora_tensors,
                  [](const auto& kv) { return kv.first.find("layers.1.") != std::string::npos; });
    expect_error(other, layer0, {"adapter for another base model?", "[8, 64]", "[32, 32]"});
    // All of it: layer 1 does not exist there.
    expect_error(other, peft, {"adapter for another base model?", "model.layers.1.", "1 layers"});
  }
  SUBCASE("a trained tensor the model does not have, or of another shape") {
    AdapterDir a = peft;
    a.trainable_params["model.layers.7.input_layernorm.weight"] =
        HostTensor{{64}, std::vector<float>(64, 1)};
    expect_error(base, a, {"model.layers.7.input_layernorm.weight", "another base model?"});
    AdapterDir b = peft;
    b.trainable_params["model.norm.weight"] = HostTensor{{32}, std::vector<float>(32, 1)};
    expect_error(base, b, {"model.norm.weight", "[32]", "[64]", "another base model?"});
  }
  SUBCASE("rank disagreements and a lone A") {
    AdapterDir a = peft;
    const std::string b_key = ll::peft_lora_key(0, "q_proj", 'B');
    a.lora_tensors[b_key] = HostTensor{{64, 4}, std::vector<float>(256, 0.1f)};
    expect_error(base, a, {"disagree on the rank", "[8, 64]", "[64, 4]"});
    AdapterDir r = peft;
    r.lora.rank = 4;
    expect_error(base, r, {"rank 8", "r = 4"});
    AdapterDir lone = peft;
    lone.lora_tensors.erase(b_key);
    expect_error(base, lone, {ll::peft_lora_key(0, "q_proj", 'A'), "lora_B"});
  }
}
