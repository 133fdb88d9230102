// One whole LoRA+ training step on the CUDA backend against the CPU backend: loss, the gradient
// of every trainable tensor, the memory plan against the backend's peak, and the weights after
// an AdamW step with clipping. Of the bundled demo model (models/kjv-tiny: 4 layers, head dim
// 32, vocab 2000), and of a random head-dim-64 GQA model under each attention kernel family the
// device can run (kernels/attention_kernel.h: simt, tc-sm80, and on Hopper tc-sm90 and
// tc-sm90-atomic-dq), and of a model with the newer families' layout (q/k/v bias, explicit
// head_dim, tied head, llama3 RoPE). The 10-step run through
// train_longlora is tests/tools/test_train_longlora_cuda_gpu.cpp.
#include <doctest/doctest.h>

#include "tests/gpu_skip.h"

#if defined(LL_HAVE_CUDA)
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "kernels/attention_kernel.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/attention_device_support.h"
#include "kernels/cuda/cuda_backend.h"
#include "model/formats/tensor_source.h"
#include "model/llama_model.h"
#include "model/memory_plan.h"
#include "optim/grad_clip.h"
#include "tests/model/model_fixtures.h"
#include "tests/test_paths.h"

namespace {

using namespace ll;

double rel_error(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  double d2 = 0.0, r2 = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    REQUIRE(std::isfinite(a[i]));
    d2 += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    r2 += double(b[i]) * b[i];
  }
  return r2 == 0.0 ? std::sqrt(d2) : std::sqrt(d2 / r2);
}

std::vector<float> download(Backend& backend, const OwnedTensor& t) {
  std::vector<float> v(size_t(t->numel()));
  backend.download_f32(v.data(), *t);
  return v;
}

ModelSetup lora_plus_setup(TrainableSet trainable = TrainableSet::lora_plus()) {
  ModelSetup setup;
  setup.lora = LoraConfig{};
  setup.lora->targets = parse_lora_targets("all-linear");  // attention and MLP adapters
  setup.trainable = trainable;
  setup.seed = 11;
  setup.training = true;
  return setup;
}

// B starts at zero in PEFT's init, which would leave A without a gradient: give both models
// the same small random B.
void randomize_lora_b(LlamaModel& model, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, 0.02f);
  for (TrainableParam& p : model.params()) {
    if (p.name.find("lora_B") == std::string::npos) continue;
    std::vector<float> values(size_t(p.master->numel()));
    for (float& x : values) x = dist(rng);
    model.set_param(p, values);
  }
}

// One LoRA+ training step of `weights` on a CUDA backend training with the `attention` family
// against the CPU backend: loss, every gradient, the
// memory plan against the backend's peak, one AdamW step and the next loss.
// `rope`: the scaling applied (default: linear position interpolation 3); `trainable`: the
// base tensors trained besides LoRA.
void check_training_step(const LlamaWeights& weights,
                         AttentionKernel attention = AttentionKernel::Auto,
                         const RopeScaling& rope = linear_rope_scaling(3.0),
                         TrainableSet trainable = TrainableSet::lora_plus()) {
  const uint64_t seed = 5;
  CpuBackend cpu;
  CudaBackend gpu(0, attention);
  MESSAGE(gpu.device_description());
  LlamaModel cpu_model(cpu, weights, lora_plus_setup(trainable));
  LlamaModel gpu_model(gpu, weights, lora_plus_setup(trainable));
  randomize_lora_b(cpu_model, seed);
  randomize_lora_b(gpu_model, seed);
  REQUIRE(cpu_model.params().size() == gpu_model.params().size());

  // 300 tokens (not a multiple of the 32-token tiles), S2-Attn with G 76 (ragged last
  // segment), position interpolation 3, classifier chunks of 64 tokens.
  const int64_t n = 300;
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> tok(3, int32_t(weights.config.vocab_size - 1));
  std::vector<int32_t> tokens(static_cast<size_t>(n)), targets(static_cast<size_t>(n));
  for (int32_t& t : tokens) t = tok(rng);
  for (int64_t i = 0; i + 1 < n; ++i) targets[size_t(i)] = tokens[size_t(i + 1)];
  targets[size_t(n - 1)] = -1;
  ForwardSpec spec;
  spec.attn_mode = AttnMode::S2;
  spec.group_size = 76;
  spec.rope = rope;
  spec.classifier_chunk = 64;
  const float loss_scale = float(1.0 / double(n - 1));

  gpu.reset_peak();
  const LossSum c = cpu_model.forward_backward(tokens, targets, spec, loss_scale);
  const LossSum g = gpu_model.forward_backward(tokens, targets, spec, loss_scale);
  CHECK(g.count == c.count);
  CHECK(std::abs(g.sum - c.sum) <= 1e-2 * std::abs(c.sum));
  MESSAGE("loss cpu " << c.sum / double(c.count) << " cuda " << g.sum / double(g.count));

  double sq_cpu = 0.0, sq_gpu = 0.0;
  for (size_t i = 0; i < cpu_model.params().size(); ++i) {
    const TrainableParam& pc = cpu_model.params()[i];
    const TrainableParam& pg = gpu_model.params()[i];
    REQUIRE(pc.name == pg.name);
    const double err = rel_error(download(gpu, pg.grad), download(cpu, pc.grad));
    INFO(pc.name << " gradient relative error " << err);
    // A key bias's gradient nearly cancels: adding the same vector to every key shifts each
    // query's scores by a constant, which softmax ignores; only RoPE's rotation (different per
    // position) leaves a remainder, about 1000 times smaller than the value bias's in this
    // model (transformers, same layout), small against the bf16 noise of the dk it is summed
    // from (seen in the emulator: 5.1e-2 with tc-sm80).
    CHECK(err < (pc.name.ends_with("k_proj.bias") ? 1.5e-1 : 5e-2));
    sq_cpu += cpu.sum_squares(*pc.grad);
    sq_gpu += gpu.sum_squares(*pg.grad);
  }
  CHECK(std::sqrt(sq_gpu) == doctest::Approx(std::sqrt(sq_cpu)).epsilon(2e-2));

  // The memory plan counts what this backend allocates (bf16 activations, fp32 state).
  MemoryPlanInput in;
  in.config = weights.config;
  in.lora = lora_plus_setup(trainable).lora;
  in.trainable = trainable;
  in.seq_len = n;
  in.classifier_chunk = spec.classifier_chunk;
  in.backend = gpu.traits();
  const MemoryPlan plan = plan_training_memory(in);
  MESSAGE("memory plan " << plan.total() << " bytes, cuda backend peak " << gpu.memory().peak);
  CHECK(double(gpu.memory().peak) <= 1.05 * double(plan.total()));
  CHECK(double(gpu.memory().peak) >= 0.95 * double(plan.total()));

  // One AdamW step with clipping active: weights within bf16 tolerance of the CPU's.
  AdamWStep step;
  step.lr = 1e-3;
  step.step = 1;
  step.grad_scale = float(clip_coefficient(std::sqrt(sq_cpu), 0.5 * std::sqrt(sq_cpu)));
  // Adam's first step moves each element by about lr * sign(g), so an element whose gradient
  // is within the backends' rounding noise of zero may move either way (found by the emulated
  // CUDA build: one element of a zero-initialised lora_B, 1.02% relative error). Elements whose
  // two gradients differ by more than half their size are excused (the gradients themselves
  // were checked above); the others must agree within bf16 tolerance.
  for (size_t i = 0; i < cpu_model.params().size(); ++i) {
    TrainableParam& pc = cpu_model.params()[i];
    TrainableParam& pg = gpu_model.params()[i];
    const std::vector<float> grad_c = download(cpu, pc.grad), grad_g = download(gpu, pg.grad);
    cpu.adamw_step(*pc.master, *pc.value, *pc.grad, *pc.exp_avg, *pc.exp_avg_sq, step);
    gpu.adamw_step(*pg.master, *pg.value, *pg.grad, *pg.exp_avg, *pg.exp_avg_sq, step);
    std::vector<float> wc = download(cpu, pc.master), wg = download(gpu, pg.master);
    size_t excused = 0;
    for (size_t e = 0; e < wc.size(); ++e) {
      if (std::fabs(grad_c[e] - grad_g[e]) > 0.5f * std::fabs(grad_c[e])) {
        wc[e] = wg[e];
        ++excused;
      }
    }
    const double err = rel_error(wg, wc);
    INFO(pc.name << " weight relative error after one step " << err << " (" << excused << " of "
                 << wc.size() << " elements with no reliable gradient sign excused)");
    CHECK(err < 1e-2);
  }
  // And the next forward sees the updated bf16 copies: the loss moves the same way.
  const LossSum c2 = cpu_model.forward_backward(tokens, targets, spec, loss_scale);
  const LossSum g2 = gpu_model.forward_backward(tokens, targets, spec, loss_scale);
  CHECK(std::abs(g2.sum - c2.sum) <= 1e-2 * std::abs(c2.sum));
  CHECK(c2.sum < c.sum);
  CHECK(g2.sum < g.sum);
}

}  // namespace

TEST_CASE("a LoRA+ training step on the CUDA backend matches the CPU backend") {
  ll::test::require_gpu();
  // The bundled demo model: head dim 32, so only the CUDA-core attention kernels (auto).
  auto files = open_model_files(ll::test::source_path("models/kjv-tiny"));
  check_training_step(load_llama_weights(*files));
}

TEST_CASE("a LoRA+ training step at head dim 64 matches the CPU backend on every attention path") {
  ll::test::require_gpu();
  // A random GQA model with head dim 64: the tensor-core attention kernels apply. One backend
  // per family this device runs (the emulated device runs them all): the CUDA-core kernels,
  // mma.sync, the Hopper ones and those with the atomic-dQ backward, whose fp32 accumulator
  // the memory plan must count.
  nlohmann::json cfg = ll::test::tiny_config_json();
  cfg["hidden_size"] = 256;  // head dim 64
  cfg["intermediate_size"] = 512;
  cfg["vocab_size"] = 96;
  cfg["max_position_embeddings"] = 256;
  const LlamaWeights weights = random_llama_weights(llama_config_from_json(cfg, "gqa"), 3, 0.1f);
  REQUIRE(weights.config.head_dim() == 64);
  const AttentionDeviceSupport device = cuda::attention_device_support(0);
  for (AttentionKernel kernel : {AttentionKernel::Simt, AttentionKernel::TcSm80,
                                 AttentionKernel::TcSm90, AttentionKernel::TcSm90AtomicDq}) {
    const std::string name(attention_kernel_name(kernel));
    std::string why;
    if (!attention_kernel_available(kernel, device, &why)) {
      MESSAGE("--attention-kernel " << name << " skipped: " << why);
      continue;
    }
    INFO("--attention-kernel " << name);
    check_training_step(weights, kernel);
  }
}

TEST_CASE("the newer families' layout trains on the CUDA backend as on the CPU backend") {
  ll::test::require_gpu();
  // Qwen2's q/k/v biases (trained too: --trainable embed,norm,bias), an explicit head_dim 64
  // with hidden 192 (q_proj [256, 192], as Mistral-Nemo), a tied LM head whose embedding
  // gradient has both uses, and Llama-3's llama3 RoPE scaling past its original context.
  nlohmann::json cfg = ll::test::tiny_config_json();
  cfg["model_type"] = "qwen2";
  cfg["hidden_size"] = 192;
  cfg["head_dim"] = 64;
  cfg["intermediate_size"] = 384;
  cfg["vocab_size"] = 160;
  cfg["max_position_embeddings"] = 512;
  cfg["tie_word_embeddings"] = true;
  cfg["rope_theta"] = 500000.0;
  cfg["rope_scaling"] = {{"rope_type", "llama3"},
                         {"factor", 8.0},
                         {"low_freq_factor", 1.0},
                         {"high_freq_factor", 4.0},
                         {"original_max_position_embeddings", 64}};
  const LlamaWeights weights = random_llama_weights(llama_config_from_json(cfg, "family"), 4, 0.1f);
  REQUIRE(weights.config.qkv_bias);
  REQUIRE(weights.config.q_dim() == 256);
  const TrainableSet trainable{.embed_tokens = true, .norms = true, .bias = true};
  const AttentionDeviceSupport device = cuda::attention_device_support(0);
  for (AttentionKernel kernel : {AttentionKernel::Simt, AttentionKernel::TcSm80}) {
    std::string why;
    if (!attention_kernel_available(kernel, device, &why)) {
      MESSAGE("--attention-kernel " << attention_kernel_name(kernel) << " skipped: " << why);
      continue;
    }
    INFO("--attention-kernel " << attention_kernel_name(kernel));
    check_training_step(weights, kernel, weights.config.rope_scaling, trainable);
  }
}

#else
TEST_CASE("a LoRA+ training step on the CUDA backend (skipped)") { ll::test::require_gpu(); }
#endif
