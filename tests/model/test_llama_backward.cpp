// The training pass of the whole model (LoRA, trainable embeddings/norms/linears, S2-Attn
// modes, recomputation) against central finite differences of its own forward.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "model/llama_model.h"
#include "tests/kernels/kernel_test_util.h"

namespace {

using namespace ll;

LlamaConfig tiny_config() {
  LlamaConfig c;
  c.vocab_size = 37;
  c.hidden_size = 16;
  c.intermediate_size = 24;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 8;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 10000.0;
  return c;
}

double loss_of(LlamaModel& model, const std::vector<int32_t>& tokens,
               const std::vector<int32_t>& targets, const ForwardSpec& spec) {
  // Forward only, through the same entry point as evaluation: sum of labelled losses.
  std::vector<float> losses = model.next_token_losses(tokens, spec);
  double sum = 0.0;
  for (size_t t = 0; t < losses.size(); ++t) {
    if (targets[t] >= 0) sum += losses[t];
  }
  return sum;
}

struct Case {
  const char* name;
  AttnMode mode;
  int64_t n_tokens, group;
  double rope_scale;
};

}  // namespace

TEST_CASE("model gradients match finite differences (LoRA, embeddings, norms, linears)") {
  const Case cases[] = {
      {"dense", AttnMode::Dense, 11, 0, 1.0},
      {"s2 ragged", AttnMode::S2, 13, 4, 2.0},
      {"s2 roll", AttnMode::S2Roll, 12, 6, 1.0},
  };
  for (const uint64_t seed : test::test_seeds()) {
    for (const Case& cs : cases) {
      CAPTURE(cs.name);
      CAPTURE(seed);
      CpuBackend backend;
      const LlamaConfig config = tiny_config();
      LlamaWeights weights = random_llama_weights(config, seed, 0.2f);
      std::mt19937_64 rng(seed);
      // Norm weights away from 1 so their gradients are not special.
      for (auto& l : weights.layers) l.input_layernorm = test::random_uniform(rng, 16, 0.5f, 1.5f);
      ModelSetup setup;
      setup.lora = LoraConfig{};
      setup.lora->rank = 3;
      setup.lora->alpha = 6.0;
      setup.lora->targets = lora_target_names();  // every linear
      setup.trainable = TrainableSet::everything();
      setup.seed = seed;
      setup.training = true;
      LlamaModel model(backend, weights, setup);
      // B starts at zero (PEFT); give it values so every LoRA path carries gradient.
      for (TrainableParam& p : model.params()) {
        if (p.name.find("lora_B") != std::string::npos) {
          const size_t n = size_t(p.master->numel());
          model.set_param(p, test::random_uniform(rng, n, -0.3f, 0.3f));
        }
      }
      const int64_t n = cs.n_tokens;
      std::uniform_int_distribution<int32_t> tok(0, int32_t(config.vocab_size) - 1);
      std::vector<int32_t> tokens(static_cast<size_t>(n)), targets(static_cast<size_t>(n));
      for (auto& t : tokens) t = tok(rng);
      for (int64_t t = 0; t + 1 < n; ++t) targets[size_t(t)] = tokens[size_t(t + 1)];
      targets[size_t(n - 1)] = -1;
      targets[2] = -1;  // an unlabelled position in the middle (SFT-style)
      ForwardSpec spec;
      spec.attn_mode = cs.mode;
      spec.group_size = cs.group;
      spec.rope = ll::linear_rope_scaling(cs.rope_scale);
      spec.classifier_chunk = 5;  // several chunks, the last one partial

      const float scale = 0.5f;
      model.zero_grads();
      const LossSum ls = model.forward_backward(tokens, targets, spec, scale);
      CHECK(ls.count == n - 2);
      CHECK(std::fabs(ls.sum - loss_of(model, tokens, targets, spec)) <= 1e-5 * ls.sum);

      // Probe a few elements of every trainable tensor.
      const float h = 3e-3f;
      int probed = 0;
      for (TrainableParam& p : model.params()) {
        CAPTURE(p.name);
        const size_t count = size_t(p.master->numel());
        std::vector<float> grad(count), values(count);
        backend.download_f32(grad.data(), *p.grad);
        backend.download_f32(values.data(), *p.master);
        std::uniform_int_distribution<size_t> pick(0, count - 1);
        for (int probe = 0; probe < 3; ++probe) {
          const size_t i = pick(rng);
          std::vector<float> moved = values;
          moved[i] = values[i] + h;
          model.set_param(p, moved);
          const double up = loss_of(model, tokens, targets, spec);
          moved[i] = values[i] - h;
          model.set_param(p, moved);
          const double down = loss_of(model, tokens, targets, spec);
          model.set_param(p, values);
          const double fd = double(scale) * (up - down) / (2.0 * double(h));
          CAPTURE(i);
          CAPTURE(fd);
          CAPTURE(grad[i]);
          // fp32 forward: finite differences carry ~1e-4 absolute noise at this step.
          CHECK(std::fabs(double(grad[i]) - fd) <= 5e-4 + 1e-2 * std::fabs(fd));
          ++probed;
        }
      }
      CHECK(probed >= 3 * (1 + 2 * 2 + 1 + 2 * 7 * 3));
    }
  }
}

TEST_CASE("LoRA with B = 0 leaves the model unchanged; recomputed loss equals the forward") {
  CpuBackend backend;
  const LlamaConfig config = tiny_config();
  const LlamaWeights weights = random_llama_weights(config, 7, 0.2f);
  LlamaModel base(backend, weights);
  ModelSetup setup;
  setup.lora = LoraConfig{};
  setup.trainable = TrainableSet::lora_plus();
  setup.training = true;
  setup.seed = 3;
  LlamaModel lora(backend, weights, setup);
  std::vector<int32_t> tokens = {1, 5, 9, 2, 30, 4, 4, 17, 8};
  ForwardSpec spec;
  const std::vector<float> a = base.next_token_losses(tokens, spec);
  const std::vector<float> b = lora.next_token_losses(tokens, spec);
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) CHECK(a[i] == doctest::Approx(b[i]).epsilon(1e-6));
  // PEFT init: A uniform in +-1/sqrt(in), B exactly zero.
  for (const TrainableParam& p : lora.params()) {
    std::vector<float> v(size_t(p.master->numel()));
    backend.download_f32(v.data(), *p.master);
    if (p.name.find("lora_B") != std::string::npos) {
      for (float x : v) CHECK(x == 0.0f);
    } else if (p.name.find("lora_A") != std::string::npos) {
      const float bound = 1.0f / std::sqrt(float(p.shape[1]));
      float mx = 0.0f;
      for (float x : v) mx = std::max(mx, std::fabs(x));
      CHECK(mx <= bound);
      CHECK(mx > 0.5f * bound);
    }
  }
  std::vector<int32_t> targets(tokens.begin() + 1, tokens.end());
  targets.push_back(-1);
  lora.zero_grads();
  const LossSum ls = lora.forward_backward(tokens, targets, spec, 1.0f);
  double sum = 0.0;
  for (float x : a) sum += x;
  CHECK(ls.sum == doctest::Approx(sum).epsilon(1e-6));
  CHECK(ls.count == int64_t(tokens.size()) - 1);
}

TEST_CASE("the gradients-ready hook reports every trained tensor once, final, in backward order") {
  // Full training with LoRA everywhere, then LoRA+ (embeddings and norms only, lm_head frozen).
  for (const bool all : {true, false}) {
    CAPTURE(all);
    CpuBackend backend;
    const LlamaConfig config = tiny_config();
    const LlamaWeights weights = random_llama_weights(config, 7, 0.2f);
    ModelSetup setup;
    setup.lora = LoraConfig{};
    setup.lora->rank = 2;
    setup.lora->alpha = 4.0;
    setup.lora->targets = all ? lora_target_names() : std::vector<std::string>{"q_proj", "v_proj"};
    setup.trainable = all ? TrainableSet::everything() : TrainableSet::lora_plus();
    setup.training = true;
    setup.optimizer_moments = false;
    LlamaModel model(backend, weights, setup);
    for (const TrainableParam& p : model.params()) {
      CHECK(p.exp_avg->data == nullptr);  // no moments asked for
      CHECK(p.grad->data != nullptr);
    }
    const std::vector<int32_t> tokens = {1, 5, 9, 2, 30, 7, 3, 11, 4};
    const std::vector<int32_t> targets = {5, 9, 2, 30, 7, -1, 11, 4, 6};
    ForwardSpec spec;
    spec.attn_mode = AttnMode::S2;
    spec.group_size = 4;

    // Each report's gradients, as they were when reported, against the gradients at the end.
    std::vector<std::vector<int>> reports;
    std::vector<std::vector<float>> seen(model.params().size());
    auto hook = [&](std::span<const int> params) {
      reports.emplace_back(params.begin(), params.end());
      for (int t : params) {
        const OwnedTensor& g = model.params()[size_t(t)].grad;
        seen[size_t(t)].resize(size_t(g->numel()));
        backend.download_f32(seen[size_t(t)].data(), *g);
      }
    };
    model.zero_grads();
    model.forward_backward(tokens, targets, spec, 0.5f, hook);

    std::vector<int> count(model.params().size(), 0);
    for (const auto& r : reports)
      for (int t : r) ++count[size_t(t)];
    for (size_t t = 0; t < count.size(); ++t) {
      CAPTURE(model.params()[t].name);
      CHECK(count[t] == 1);
      std::vector<float> final_grad(size_t(model.params()[t].grad->numel()));
      backend.download_f32(final_grad.data(), *model.params()[t].grad);
      CHECK(seen[t] == final_grad);
    }
    // Order: the head (final norm, lm_head when trained), layer 1, layer 0, the embedding.
    REQUIRE(reports.size() == 4);
    auto names = [&](const std::vector<int>& r) {
      std::string all_names;
      for (int t : r) all_names += model.params()[size_t(t)].name + " ";
      return all_names;
    };
    CHECK(names(reports[0]) == (all ? "model.norm.weight lm_head.weight " : "model.norm.weight "));
    CHECK(names(reports[1]).find("layers.1.") != std::string::npos);
    CHECK(names(reports[1]).find("layers.0.") == std::string::npos);
    CHECK(names(reports[2]).find("layers.0.") != std::string::npos);
    CHECK(names(reports[3]) == "model.embed_tokens.weight ");
    CHECK(reports[1].size() == (all ? 2u + 7u * 3u : 2u + 2u * 2u));

    // The hook changes nothing: the same gradients without it.
    std::vector<std::vector<float>> with_hook;
    for (const TrainableParam& p : model.params()) {
      with_hook.emplace_back(size_t(p.grad->numel()));
      backend.download_f32(with_hook.back().data(), *p.grad);
    }
    model.zero_grads();
    model.forward_backward(tokens, targets, spec, 0.5f);
    for (size_t t = 0; t < model.params().size(); ++t) {
      std::vector<float> g(size_t(model.params()[t].grad->numel()));
      backend.download_f32(g.data(), *model.params()[t].grad);
      CHECK(g == with_hook[t]);
    }
  }
}
