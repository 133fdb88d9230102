// The layouts of the newer families on the CPU backend, against independent checks: q/k/v and
// o biases, an explicit head_dim (q_proj wider than hidden_size) and a tied LM head, through
// gradients (finite differences of the model's own forward), the tied gradient as the sum of
// both uses (an untied model with lm_head = embedding), and the memory plan (the backend's
// allocations, byte for byte).
#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "model/llama_model.h"
#include "model/memory_plan.h"
#include "tests/kernels/kernel_test_util.h"

namespace {

using namespace ll;

// Qwen2-like (q/k/v bias) plus o_proj bias (Llama attention_bias), head_dim 6 with hidden 16
// and 4 heads (q_dim 24 != hidden), GQA, tied embeddings.
LlamaConfig family_config(bool tied) {
  LlamaConfig c;
  c.family = ModelFamily::Qwen2;
  c.vocab_size = 29;
  c.hidden_size = 16;
  c.intermediate_size = 20;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.explicit_head_dim = 6;
  c.max_position_embeddings = 32;
  c.rms_norm_eps = 1e-5;
  c.qkv_bias = true;
  c.o_bias = true;
  c.tie_word_embeddings = tied;
  return c;
}

double loss_of(LlamaModel& model, const std::vector<int32_t>& tokens, const ForwardSpec& spec) {
  double sum = 0.0;
  for (float l : model.next_token_losses(tokens, spec)) sum += l;
  return sum;
}

std::vector<float> download(CpuBackend& backend, const Tensor& t) {
  std::vector<float> v(size_t(t.numel()));
  backend.download_f32(v.data(), t);
  return v;
}

const TrainableParam& param_named(const LlamaModel& model, const std::string& name) {
  for (const TrainableParam& p : model.params())
    if (p.name == name) return p;
  FAIL("no trainable parameter " << name);
  return model.params().front();
}

std::vector<int32_t> random_tokens(std::mt19937_64& rng, int64_t n, int64_t vocab) {
  std::uniform_int_distribution<int32_t> tok(0, int32_t(vocab) - 1);
  std::vector<int32_t> tokens(static_cast<size_t>(n));
  for (auto& t : tokens) t = tok(rng);
  return tokens;
}

}  // namespace

TEST_CASE("tensor specs: explicit head_dim widens q/o, biases appear under their HF names") {
  const LlamaConfig c = family_config(true);
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const LlamaTensorSpec& s : llama_tensor_specs(c)) shapes[s.name] = s.shape;
  CHECK(shapes.at("model.layers.0.self_attn.q_proj.weight") == std::vector<int64_t>{24, 16});
  CHECK(shapes.at("model.layers.0.self_attn.k_proj.weight") == std::vector<int64_t>{12, 16});
  CHECK(shapes.at("model.layers.0.self_attn.o_proj.weight") == std::vector<int64_t>{16, 24});
  CHECK(shapes.at("model.layers.1.self_attn.q_proj.bias") == std::vector<int64_t>{24});
  CHECK(shapes.at("model.layers.1.self_attn.k_proj.bias") == std::vector<int64_t>{12});
  CHECK(shapes.at("model.layers.1.self_attn.v_proj.bias") == std::vector<int64_t>{12});
  CHECK(shapes.at("model.layers.1.self_attn.o_proj.bias") == std::vector<int64_t>{16});
  CHECK(shapes.count("model.layers.0.mlp.up_proj.bias") == 0);
  LlamaConfig plain = c;
  plain.qkv_bias = plain.o_bias = false;
  for (const LlamaTensorSpec& s : llama_tensor_specs(plain)) CHECK(!s.name.ends_with(".bias"));
}

TEST_CASE("biases, explicit head_dim and a tied head: gradients match finite differences") {
  for (const uint64_t seed : test::test_seeds()) {
    for (const AttnMode mode : {AttnMode::Dense, AttnMode::S2}) {
      CAPTURE(seed);
      CAPTURE(int(mode));
      CpuBackend backend;
      const LlamaConfig config = family_config(true);
      const LlamaWeights weights = random_llama_weights(config, seed, 0.2f);
      ModelSetup setup;
      setup.lora = LoraConfig{};
      setup.lora->rank = 2;
      setup.lora->alpha = 4.0;
      setup.trainable = {.embed_tokens = true, .norms = true, .bias = true};
      setup.seed = seed;
      setup.training = true;
      LlamaModel model(backend, weights, setup);
      std::mt19937_64 rng(seed);
      for (TrainableParam& p : model.params()) {
        if (p.name.find("lora_B") != std::string::npos)
          model.set_param(p, test::random_uniform(rng, size_t(p.master->numel()), -0.3f, 0.3f));
      }
      // LoRA leaves the biases to --trainable: every bias is a parameter of its own, no lm_head.
      int biases = 0;
      for (const TrainableParam& p : model.params()) {
        biases += p.name.ends_with(".bias");
        CHECK(p.name != "lm_head.weight");
      }
      CHECK(biases == 2 * 4);

      const int64_t n = 12;
      const std::vector<int32_t> tokens = random_tokens(rng, n, config.vocab_size);
      std::vector<int32_t> targets(tokens.begin() + 1, tokens.end());
      targets.push_back(-1);
      ForwardSpec spec;
      spec.attn_mode = mode;
      spec.group_size = mode == AttnMode::Dense ? 0 : 4;
      spec.classifier_chunk = 5;
      model.zero_grads();
      const float scale = 0.5f;
      model.forward_backward(tokens, targets, spec, scale);

      const float h = 3e-3f;
      for (TrainableParam& p : model.params()) {
        CAPTURE(p.name);
        const std::vector<float> grad = download(backend, *p.grad);
        const std::vector<float> values = download(backend, *p.master);
        std::uniform_int_distribution<size_t> pick(0, values.size() - 1);
        // The embedding: probe rows of tokens that occur (both uses) and any row (head only).
        std::vector<size_t> probes = {pick(rng), pick(rng)};
        if (p.name == "model.embed_tokens.weight")
          probes.push_back(size_t(tokens[3]) * size_t(config.hidden_size) + 5);
        for (const size_t i : probes) {
          std::vector<float> moved = values;
          moved[i] = values[i] + h;
          model.set_param(p, moved);
          const double up = loss_of(model, tokens, spec);
          moved[i] = values[i] - h;
          model.set_param(p, moved);
          const double down = loss_of(model, tokens, spec);
          model.set_param(p, values);
          const double fd = double(scale) * (up - down) / (2.0 * double(h));
          CAPTURE(i);
          CHECK(std::fabs(double(grad[i]) - fd) <= 5e-4 + 1e-2 * std::fabs(fd));
        }
      }
    }
  }
}

TEST_CASE("a tied embedding's gradient is the sum of its lookup's and the LM head's") {
  const uint64_t seed = test::test_seeds()[0];
  const LlamaConfig tied_config = family_config(true);
  const LlamaWeights tied_weights = random_llama_weights(tied_config, seed, 0.2f);
  // The same model untied, with lm_head = the embedding, training both separately.
  LlamaWeights untied_weights = tied_weights;
  untied_weights.config.tie_word_embeddings = false;
  untied_weights.lm_head = untied_weights.embed_tokens;

  std::mt19937_64 rng(seed);
  const std::vector<int32_t> tokens = random_tokens(rng, 10, tied_config.vocab_size);
  std::vector<int32_t> targets(tokens.begin() + 1, tokens.end());
  targets.push_back(-1);
  ForwardSpec spec;

  CpuBackend backend;
  ModelSetup tied_setup;
  tied_setup.trainable = {.embed_tokens = true};
  tied_setup.training = true;
  LlamaModel tied(backend, tied_weights, tied_setup);
  CHECK(tied.params().size() == 1);  // one tensor for both uses
  tied.zero_grads();
  const LossSum a = tied.forward_backward(tokens, targets, spec, 1.0f);

  ModelSetup untied_setup;
  untied_setup.trainable = TrainableSet::everything();
  untied_setup.training = true;
  LlamaModel untied(backend, untied_weights, untied_setup);
  untied.zero_grads();
  const LossSum b = untied.forward_backward(tokens, targets, spec, 1.0f);
  CHECK(a.sum == doctest::Approx(b.sum).epsilon(1e-6));

  const std::vector<float> g = download(backend, *tied.params()[0].grad);
  const std::vector<float> g_embed =
      download(backend, *param_named(untied, "model.embed_tokens.weight").grad);
  const std::vector<float> g_head = download(backend, *param_named(untied, "lm_head.weight").grad);
  REQUIRE(g.size() == g_embed.size());
  double worst = 0.0, largest = 0.0;
  for (size_t i = 0; i < g.size(); ++i) {
    worst = std::max(worst, std::fabs(double(g[i]) - (double(g_embed[i]) + double(g_head[i]))));
    largest = std::max(largest, std::fabs(double(g[i])));
  }
  CHECK(largest > 1e-3);  // the comparison is not between zeros
  CHECK(worst <= 1e-6 * largest + 1e-7);

  // The exported adapter holds the tied tensor once, under the embedding's name.
  const AdapterDir adapter = tied.export_adapter("tied");
  CHECK(adapter.trainable_params.size() == 1);
  CHECK(adapter.trainable_params.count("model.embed_tokens.weight") == 1);
}

TEST_CASE("the memory plan counts biases and a tied head as the CPU backend allocates them") {
  for (const bool tied : {true, false}) {
    for (const TrainableSet trainable :
         {TrainableSet::lora_plus(), TrainableSet{.norms = true, .bias = true},
          TrainableSet::everything()}) {
      CAPTURE(tied);
      CAPTURE(trainable_name(trainable));
      const LlamaConfig config = family_config(tied);
      ModelSetup setup;
      setup.lora = LoraConfig{};
      setup.lora->rank = 3;
      setup.trainable = trainable;
      setup.training = true;
      MemoryPlanInput in;
      in.config = config;
      in.lora = setup.lora;
      in.trainable = trainable;
      in.seq_len = 20;
      in.classifier_chunk = 8;
      const MemoryPlan plan = plan_training_memory(in);
      CpuBackend backend;
      LlamaModel model(backend, random_llama_weights(config, 3), setup);
      CHECK(backend.bytes_in_use() == plan.parameter_bytes);
      std::vector<int32_t> tokens(20), targets(20);
      for (int64_t i = 0; i < 20; ++i) {
        tokens[size_t(i)] = int32_t((i * 7) % 29);
        targets[size_t(i)] = i + 1 < 20 ? int32_t(((i + 1) * 7) % 29) : -1;
      }
      ForwardSpec spec;
      spec.classifier_chunk = 8;
      backend.reset_peak();
      model.forward_backward(tokens, targets, spec, 1.0f);
      CHECK(backend.peak_bytes() - plan.parameter_bytes == plan.step_bytes);
    }
  }
}

TEST_CASE("Mistral's sliding window: a forward beyond it is refused, within it runs") {
  LlamaConfig c = family_config(false);
  c.family = ModelFamily::Mistral;
  c.qkv_bias = c.o_bias = false;
  c.sliding_window = 8;
  CpuBackend backend;
  LlamaModel model(backend, random_llama_weights(c, 5));
  std::mt19937_64 rng(5);
  ForwardSpec spec;
  CHECK(model.next_token_losses(random_tokens(rng, 8, c.vocab_size), spec).size() == 7);
  CHECK_THROWS_WITH_AS(model.next_token_losses(random_tokens(rng, 9, c.vocab_size), spec),
                       doctest::Contains("sliding_window = 8"), Error);
  // Generation reaches the window through the cache: refused at the first position past it.
  LlamaModel::KvCache cache = model.make_kv_cache(16);
  model.forward_cached(random_tokens(rng, 8, c.vocab_size), cache, spec);
  CHECK_THROWS_WITH_AS(model.forward_cached(random_tokens(rng, 1, c.vocab_size), cache, spec),
                       doctest::Contains("not implemented"), Error);
}
