// LoRA+ training math against PyTorch + transformers + peft (tests/reference/
// make_training_fixtures.py): loss and gradients of every trainable tensor with S2-Attn
// (segment form, position interpolation 2) and with full attention, then 3 AdamW steps with
// gradient accumulation and clipping.
#include <doctest/doctest.h>

#include <cmath>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_backend.h"
#include "model/formats/safetensors.h"
#include "model/formats/tensor_source.h"
#include "model/llama_model.h"
#include "optim/adamw.h"
#include "optim/grad_clip.h"
#include "tests/test_paths.h"

namespace {

using namespace ll;

double rel_error(const std::vector<float>& out, const std::vector<float>& ref) {
  double d2 = 0.0, r2 = 0.0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double d = double(out[i]) - double(ref[i]);
    d2 += d * d;
    r2 += double(ref[i]) * double(ref[i]);
  }
  return std::sqrt(d2 / r2);
}

struct Fixture {
  SafetensorsFile ref =
      read_safetensors(test::source_path("tests/fixtures/tiny_llama_lora_reference.safetensors"));
  LlamaWeights weights = [] {
    auto files = open_model_files(test::source_path("tests/fixtures/tiny_llama"));
    return load_llama_weights(*files);
  }();
};

// The model as the reference set it up: LoRA r 8, alpha 16 on q,k,v,o; embeddings and norms
// trained; LoRA A and B from the fixture (B is non-zero so that A has a gradient).
LlamaModel make_model(CpuBackend& backend, const Fixture& f) {
  ModelSetup setup;
  setup.lora = LoraConfig{};
  setup.trainable = TrainableSet::lora_plus();
  setup.training = true;
  LlamaModel model(backend, f.weights, setup);
  for (TrainableParam& p : model.params()) {
    if (p.name.find("lora_") == std::string::npos) continue;
    model.set_param(p, f.ref.read_f32("init." + p.name, p.shape));
  }
  return model;
}

std::vector<float> download(Backend& backend, const OwnedTensor& t) {
  std::vector<float> v(size_t(t->numel()));
  backend.download_f32(v.data(), *t);
  return v;
}

std::vector<int32_t> shifted_targets(const std::vector<int32_t>& tokens) {
  std::vector<int32_t> targets(tokens.begin() + 1, tokens.end());
  targets.push_back(-1);
  return targets;
}

}  // namespace

TEST_CASE("loss and gradients of every trainable tensor match peft (S2-Attn and full attention)") {
  const Fixture f;
  struct Case {
    std::string name;
    AttnMode mode;
    int64_t group;
    double rope;
  };
  for (const Case& c :
       {Case{"s2", AttnMode::S2, 64, 2.0}, Case{"dense", AttnMode::Dense, 0, 1.0}}) {
    CAPTURE(c.name);
    CpuBackend backend;
    LlamaModel model = make_model(backend, f);
    REQUIRE(model.params().size() == 22);
    const std::vector<int32_t> tokens = f.ref.read_i32(c.name + ".tokens");
    ForwardSpec spec;
    spec.attn_mode = c.mode;
    spec.group_size = c.group;
    spec.rope = ll::linear_rope_scaling(c.rope);
    spec.classifier_chunk = 100;  // several chunks
    model.zero_grads();
    const float scale = float(1.0 / double(tokens.size() - 1));
    const LossSum ls = model.forward_backward(tokens, shifted_targets(tokens), spec, scale);
    const double loss = ls.sum / double(ls.count);
    const double ref_loss = f.ref.read_f32(c.name + ".loss")[0];
    CHECK(std::fabs(loss - ref_loss) <= 1e-5 * ref_loss);
    for (const TrainableParam& p : model.params()) {
      CAPTURE(p.name);
      const std::vector<float> ref = f.ref.read_f32(c.name + ".grad." + p.name, p.shape);
      const double err = rel_error(download(backend, p.grad), ref);
      CAPTURE(err);
      CHECK(err <= 1e-4);
    }
  }
}

TEST_CASE("three AdamW steps with accumulation and clipping match torch") {
  const Fixture f;
  CpuBackend backend;
  LlamaModel model = make_model(backend, f);
  const std::vector<int32_t> all_tokens = f.ref.read_i32("train.tokens");  // [6, 256]
  const int64_t n = 256;
  REQUIRE(all_tokens.size() == 6 * size_t(n));
  const double max_norm = f.ref.read_f32("train.max_grad_norm")[0];
  const std::vector<float> ref_loss = f.ref.read_f32("train.loss");
  const std::vector<float> ref_norm = f.ref.read_f32("train.grad_norm");
  ForwardSpec spec;
  spec.attn_mode = AttnMode::S2;
  spec.group_size = 64;
  spec.rope = ll::linear_rope_scaling(2.0);
  AdamWStep update;
  update.config = AdamWConfig{0.9, 0.95, 1e-8, 0.0};
  update.lr = f.ref.read_f32("train.lr")[0];
  int clipped = 0;
  for (int step = 0; step < 3; ++step) {
    model.zero_grads();
    double loss_sum = 0.0;
    int64_t count = 0;
    for (int micro = 0; micro < 2; ++micro) {
      const auto begin = all_tokens.begin() + (2 * step + micro) * n;
      const std::vector<int32_t> window(begin, begin + n);
      // Mean over the step's labelled tokens (both windows have N-1 labels).
      const LossSum ls = model.forward_backward(window, shifted_targets(window), spec,
                                                float(1.0 / (2.0 * (n - 1))));
      loss_sum += ls.sum;
      count += ls.count;
    }
    CHECK(loss_sum / double(count) == doctest::Approx(ref_loss[size_t(step)]).epsilon(1e-5));
    double sq = 0.0;
    for (const TrainableParam& p : model.params()) sq += backend.sum_squares(*p.grad);
    const double norm = std::sqrt(sq);
    CHECK(norm == doctest::Approx(ref_norm[size_t(step)]).epsilon(1e-4));
    update.step = step + 1;
    update.grad_scale = float(clip_coefficient(norm, max_norm));
    if (update.grad_scale < 1.0f) ++clipped;
    for (TrainableParam& p : model.params()) {
      backend.adamw_step(*p.master, *p.value, *p.grad, *p.exp_avg, *p.exp_avg_sq, update);
    }
  }
  CHECK(clipped >= 1);  // the fixture exercises clipping
  for (const TrainableParam& p : model.params()) {
    CAPTURE(p.name);
    const std::vector<float> ref = f.ref.read_f32("train.after." + p.name, p.shape);
    const double err = rel_error(download(backend, p.master), ref);
    CAPTURE(err);
    CHECK(err <= 1e-5);
  }
}
