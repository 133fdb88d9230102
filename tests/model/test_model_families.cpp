// The model families on the CPU backend against transformers + peft (fixtures written by
// tests/reference/make_family_fixtures.py under tests/fixtures/families/): Llama-3.x (llama3
// RoPE scaling, tied embeddings, GQA, an eos list), Qwen2/2.5 (q/k/v biases, tied embeddings)
// and Mistral (head_dim != hidden_size / heads). Per family: config.json as transformers writes
// it, logits and per-token losses, the non-overlapping perplexity, LoRA+ gradients with S2-Attn
// and full attention (Qwen2 also with its biases trained), greedy generation of 32 tokens.
// Llama-2 is tests/fixtures/tiny_llama (test_llama_forward_reference.cpp and others).
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/token_file.h"
#include "engine/eval/perplexity.h"
#include "kernels/cpu/cpu_backend.h"
#include "model/formats/adapter_io.h"
#include "model/formats/safetensors.h"
#include "model/formats/tensor_source.h"
#include "model/generation.h"
#include "model/llama_model.h"
#include "model/llama_weights.h"
#include "tests/model/model_fixtures.h"
#include "tests/test_paths.h"

namespace {

using namespace ll;
using test::source_path;

// One family's fixtures: the model directory, its PEFT adapter, the reference.
struct Family {
  explicit Family(const std::string& name)
      : name(name),
        dir(source_path("tests/fixtures/families/" + name)),
        adapter_dir(dir + "_adapter"),
        ref(read_safetensors(dir + "_reference.safetensors")) {}
  std::string name, dir, adapter_dir;
  SafetensorsFile ref;

  LlamaWeights weights() const {
    auto files = open_model_files(dir);
    return load_llama_weights(*files);
  }
  double scalar(const std::string& key) const { return ref.read_f32(key).at(0); }
};

// max |out - ref| / max |ref|: the logits' scale is set by the largest entries.
double max_relative_error(const std::vector<float>& out, const std::vector<float>& ref) {
  REQUIRE(out.size() == ref.size());
  double max_diff = 0, max_ref = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    REQUIRE(std::isfinite(out[i]));
    max_diff = std::max(max_diff, std::fabs(double(out[i]) - double(ref[i])));
    max_ref = std::max(max_ref, std::fabs(double(ref[i])));
  }
  return max_diff / max_ref;
}

// ||out - ref|| / ||ref||.
double relative_l2(const std::vector<float>& out, const std::vector<float>& ref) {
  REQUIRE(out.size() == ref.size());
  double d2 = 0, r2 = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    REQUIRE(std::isfinite(out[i]));
    const double d = double(out[i]) - double(ref[i]);
    d2 += d * d;
    r2 += double(ref[i]) * double(ref[i]);
  }
  return std::sqrt(d2 / r2);
}

double rel(double a, double b) { return std::fabs(a - b) / std::fabs(b); }

std::vector<int32_t> shifted_targets(const std::vector<int32_t>& tokens) {
  std::vector<int32_t> targets(tokens.begin() + 1, tokens.end());
  targets.push_back(-1);
  return targets;
}

// What config.json says, as our parser reads it.
void check_config(const std::string& name) {
  const Family f(name);
  const LlamaConfig c = open_model_files(f.dir)->config;
  CHECK(c.num_hidden_layers == 2);
  CHECK(c.num_key_value_heads == 2);  // GQA: 4 query heads share 2 kv heads
  CHECK(c.num_attention_heads == 4);
  if (name == "llama3") {
    CHECK(c.family == ModelFamily::Llama);
    CHECK(c.head_dim() == 12);
    CHECK(c.tie_word_embeddings);
    CHECK(c.rope_theta == 500000.0);
    CHECK(c.eos_token_ids == std::vector<int64_t>{254, 32, 253});
    CHECK(c.eos_token_id == 254);
    CHECK_FALSE(c.qkv_bias);
  } else if (name == "qwen2") {
    CHECK(c.family == ModelFamily::Qwen2);
    CHECK(c.qkv_bias);  // from model_type: Qwen2's config has no attention_bias
    CHECK_FALSE(c.o_bias);
    CHECK(c.tie_word_embeddings);
    CHECK(c.rope_theta == 1e6);
    CHECK(c.rms_norm_eps == 1e-6);
    CHECK(c.vocab_size == 288);
    CHECK(c.sliding_window == 0);
  } else if (name == "mistral") {
    CHECK(c.family == ModelFamily::Mistral);
    CHECK(c.head_dim() == 16);
    CHECK(c.hidden_size == 32);  // q_proj is [64, 32]: head_dim != hidden_size / heads
    CHECK(c.q_dim() == 64);
    CHECK_FALSE(c.tie_word_embeddings);
    CHECK(c.sliding_window == 0);  // "sliding_window": null
  }
}

void check_logits_and_losses(const std::string& name) {
  const Family f(name);
  CpuBackend backend;
  LlamaModel model(backend, f.weights());
  const std::vector<int32_t> tokens = f.ref.read_i32("logits.tokens");
  ForwardSpec spec;
  spec.rope = model.config().rope_scaling;  // the model's own (llama3 for Llama-3.x)
  const double logits_err =
      max_relative_error(model.logits(tokens, spec), f.ref.read_f32("logits"));
  const std::vector<float> losses = model.next_token_losses(tokens, spec);
  const double losses_err = max_relative_error(losses, f.ref.read_f32("losses"));
  double mean = 0;
  for (float l : losses) mean += l;
  mean /= double(losses.size());
  const double loss_err = rel(mean, f.scalar("loss"));
  MESSAGE(name << ": logits max relative error " << logits_err << ", per-token losses "
               << losses_err << ", mean loss " << loss_err);
  CHECK(logits_err <= 1e-4);
  CHECK(losses_err <= 1e-4);
  CHECK(loss_err <= 1e-4);
}

// The raw-u16 token file ppl_eval reads.
std::string write_raw_u16(const std::vector<int32_t>& tokens, const std::string& name) {
  const auto path = test::fresh_temp_dir(name) / "tokens.bin";
  std::ofstream out(path, std::ios::binary);
  for (int32_t t : tokens) {
    const uint16_t v = uint16_t(t);
    out.write(reinterpret_cast<const char*>(&v), 2);
  }
  return path.string();
}

void check_perplexity(const std::string& name) {
  const Family f(name);
  CpuBackend backend;
  LlamaModel model(backend, f.weights());
  const std::vector<int32_t> tokens = f.ref.read_i32("ppl.tokens");
  const int64_t seq_len = f.ref.read_i32("ppl.seq_len").at(0);
  const TokenFile data = TokenFile::open(write_raw_u16(tokens, "families_ppl_" + name),
                                         TokenFileFormat::RawU16, model.config().vocab_size);
  const auto windows = ppl_windows(data.size(), seq_len, 256, PplProtocol::NonOverlapping);
  ForwardSpec spec;
  spec.rope = model.config().rope_scaling;
  const PplResult r = evaluate_perplexity(model, data, PplProtocol::NonOverlapping, windows, spec);
  CHECK(r.tokens_scored == f.ref.read_i32("ppl.tokens_scored").at(0));
  const double ppl_err = rel(r.ppl, f.scalar("ppl.ppl"));
  MESSAGE(name << ": ppl " << r.ppl << " reference " << f.scalar("ppl.ppl") << ", relative error "
               << ppl_err);
  CHECK(ppl_err <= 1e-5);
  CHECK(rel(r.mean_loss, f.scalar("ppl.mean_loss")) <= 1e-5);
}

// LoRA+ (r 8, alpha 16 on q/k/v/o, the adapter's A and B; embeddings and norms trained, with
// train_bias the q/k/v biases too): loss and the gradient of every trainable tensor for case
// "s2" (S2-Attn) or "dense" (full attention).
void check_gradients(const std::string& name, const std::string& c, bool train_bias) {
  const Family f(name);
  const AdapterDir adapter = read_adapter_dir(f.adapter_dir);
  CpuBackend backend;
  ModelSetup setup;
  setup.lora = adapter.lora;
  setup.trainable = TrainableSet::lora_plus();
  setup.trainable.bias = train_bias;
  setup.training = true;
  LlamaModel model(backend, f.weights(), setup);
  // Only the LoRA matrices: the Qwen2 adapter's trainable_params.safetensors (for the export
  // test) would change the base tensors.
  for (TrainableParam& p : model.params()) {
    if (p.name.find(".lora_") == std::string::npos) continue;
    model.set_param(p, adapter.lora_tensors.at(p.name).values);
  }
  // The model trains exactly the tensors the reference has gradients of.
  size_t ref_grads = 0;
  for (const TensorEntry& t : f.ref.tensors) {
    if (t.name.starts_with(c + ".grad.") && (train_bias || !t.name.ends_with(".bias"))) ++ref_grads;
  }
  const size_t n_bias = train_bias && model.config().qkv_bias ? 6 : 0;
  CHECK(model.params().size() == 22 + n_bias);
  CHECK(model.params().size() == ref_grads);

  const std::vector<int32_t> tokens = f.ref.read_i32(c + ".tokens");
  ForwardSpec spec;
  spec.group_size = f.ref.read_i32(c + ".group_size").at(0);
  spec.attn_mode = spec.group_size > 0 ? AttnMode::S2 : AttnMode::Dense;
  // Linear interpolation on top of the config's plain RoPE (qwen2, mistral: 2), or the model's
  // own scaling (llama3: factor 1 here).
  const double factor = f.scalar(c + ".rope_factor");
  spec.rope = factor == 1.0 ? model.config().rope_scaling : linear_rope_scaling(factor);
  spec.classifier_chunk = 100;  // several chunks
  model.zero_grads();
  const LossSum ls = model.forward_backward(tokens, shifted_targets(tokens), spec,
                                            float(1.0 / double(tokens.size() - 1)));
  const double loss_err = rel(ls.sum / double(ls.count), f.scalar(c + ".loss"));
  CHECK(loss_err <= 1e-5);
  double worst = 0;
  std::string worst_name;
  for (const TrainableParam& p : model.params()) {
    CAPTURE(p.name);
    std::vector<float> grad(size_t(p.grad->numel()));
    backend.download_f32(grad.data(), *p.grad);
    const double err = relative_l2(grad, f.ref.read_f32(c + ".grad." + p.name, p.shape));
    CAPTURE(err);
    CHECK(err <= 1e-4);
    if (err > worst) worst = err, worst_name = p.name;
  }
  const std::string what = name + " " + c + (train_bias ? " (bias trained)" : "");
  MESSAGE(what << ": loss relative error " << loss_err << ", worst gradient relative L2 error "
               << worst << " (" << worst_name << ")");
}

// Greedy generation (KV cache) of 32 tokens after the prompt, as transformers' generate; and,
// where the reference hit one of the config's eos ids, the stop there.
void check_generation(const std::string& name) {
  const Family f(name);
  CpuBackend backend;
  LlamaModel model(backend, f.weights());
  const std::vector<int32_t> prompt = f.ref.read_i32("gen.prompt");
  const std::vector<int32_t> expected = f.ref.read_i32("gen.tokens");
  REQUIRE(expected.size() == 32);
  GenerationOptions options;
  options.max_new_tokens = 32;
  options.rope = model.config().rope_scaling;
  const GenerationResult r = generate(model, prompt, options);
  CHECK(r.tokens == expected);
  CHECK_FALSE(r.stopped);
  const auto first_diff =
      std::mismatch(r.tokens.begin(), r.tokens.end(), expected.begin(), expected.end());
  MESSAGE(name << ": greedy tokens equal to transformers' for "
               << (first_diff.first - r.tokens.begin()) << " of 32");
  if (f.ref.find("gen.eos_tokens") == nullptr) return;
  // The reference stopped at an eos id of the config; with a list (llama3) it is not the first.
  const std::vector<int32_t> stopped = f.ref.read_i32("gen.eos_tokens");
  const std::vector<int64_t>& eos = model.config().eos_token_ids;
  CHECK(std::find(eos.begin(), eos.end(), int64_t(stopped.back())) != eos.end());
  // Every eos id of the config stops generation, as transformers' generate does.
  for (int64_t id : eos) options.stop_tokens.push_back(int32_t(id));
  const GenerationResult s = generate(model, prompt, options);
  CHECK(s.tokens == stopped);
  CHECK(s.stopped);
  MESSAGE(name << ": with eos id " << stopped.back() << " generation stops after "
               << s.tokens.size() << " tokens (reference " << stopped.size() << ")");
}

}  // namespace

// Llama-3.x: llama3 RoPE scaling, tied embeddings, an eos list.
TEST_CASE("llama3: config.json as transformers writes it") { check_config("llama3"); }
TEST_CASE("llama3: logits and losses match transformers") { check_logits_and_losses("llama3"); }
TEST_CASE("llama3: non-overlapping perplexity matches") { check_perplexity("llama3"); }
TEST_CASE("llama3: LoRA+ gradients with S2-Attn match peft") {
  check_gradients("llama3", "s2", false);
}
TEST_CASE("llama3: LoRA+ gradients with full attention match peft") {
  check_gradients("llama3", "dense", false);
}
TEST_CASE("llama3: greedy generation matches transformers' generate") {
  check_generation("llama3");
}
TEST_CASE("llama3: the Hub's config layout (rope_scaling, rope_theta) gives the same model") {
  // Meta's config.json carries top-level rope_theta and rope_scaling, transformers 5 writes
  // rope_parameters; make_family_fixtures.py checks transformers reads both the same.
  const Family f("llama3");
  test::TempDir dir("families_llama3_hub");
  nlohmann::json config = nlohmann::json::parse(test::read_bytes(f.dir + "/config.json"));
  nlohmann::json rope = config.at("rope_parameters");
  config.erase("rope_parameters");
  config["rope_theta"] = rope.at("rope_theta");
  rope.erase("rope_theta");
  config["rope_scaling"] = rope;
  test::write_text(dir.path / "config.json", config.dump(2));
  std::filesystem::copy_file(f.dir + "/model.safetensors", dir.path / "model.safetensors");
  CpuBackend backend;
  LlamaModel model(backend, load_llama_weights(*open_model_files(dir.path.string())));
  ForwardSpec spec;
  spec.rope = model.config().rope_scaling;
  const double err = max_relative_error(model.logits(f.ref.read_i32("logits.tokens"), spec),
                                        f.ref.read_f32("logits"));
  MESSAGE("llama3 (Hub layout): logits max relative error " << err);
  CHECK(err <= 1e-4);
}

TEST_CASE("qwen2: config.json as transformers writes it") { check_config("qwen2"); }
TEST_CASE("qwen2: logits and losses match transformers") { check_logits_and_losses("qwen2"); }
TEST_CASE("qwen2: non-overlapping perplexity matches") { check_perplexity("qwen2"); }
TEST_CASE("qwen2: LoRA+ gradients with S2-Attn match peft") {
  check_gradients("qwen2", "s2", false);
}
TEST_CASE("qwen2: LoRA+ gradients with full attention match peft") {
  check_gradients("qwen2", "dense", false);
}
TEST_CASE("qwen2: LoRA+ with --trainable bias: the q/k/v bias gradients match too") {
  check_gradients("qwen2", "s2", true);
  check_gradients("qwen2", "dense", true);
}
TEST_CASE("qwen2: greedy generation matches transformers' generate") { check_generation("qwen2"); }

TEST_CASE("mistral: config.json as transformers writes it") { check_config("mistral"); }
TEST_CASE("mistral: logits and losses match transformers") { check_logits_and_losses("mistral"); }
TEST_CASE("mistral: non-overlapping perplexity matches") { check_perplexity("mistral"); }
TEST_CASE("mistral: LoRA+ gradients with S2-Attn match peft") {
  check_gradients("mistral", "s2", false);
}
TEST_CASE("mistral: LoRA+ gradients with full attention match peft") {
  check_gradients("mistral", "dense", false);
}
TEST_CASE("mistral: greedy generation matches transformers' generate") {
  check_generation("mistral");
}
