// The CPU reference forward pass against Hugging Face transformers (fixtures written by
// tests/reference/make_fixtures.py): logits, per-position losses, both perplexity protocols,
// position interpolation from --context-size and from a config's rope_scaling.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdio>
#include <fstream>

#include "data/token_file.h"
#include "engine/eval/perplexity.h"
#include "kernels/cpu/cpu_backend.h"
#include "model/formats/safetensors.h"
#include "model/llama_model.h"
#include "model/llama_weights.h"
#include "model/position_interpolation.h"
#include "tests/test_paths.h"

namespace {

using ll::test::source_path;

// max |out - ref| / max |ref|: the logits' scale is set by the largest entries, so this is
// the relative error that does not blow up on logits near zero.
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

double rel(double a, double b) { return std::fabs(a - b) / std::fabs(b); }

struct Fixture {
  ll::SafetensorsFile ref =
      ll::read_safetensors(source_path("tests/fixtures/tiny_llama_reference.safetensors"));
  double scalar(const std::string& name) const { return ref.read_f32(name).at(0); }
  int64_t count(const std::string& name) const { return ref.read_i32(name).at(0); }
};

ll::LlamaWeights load(const std::string& dir) {
  auto files = ll::open_model_files(source_path(dir));
  return ll::load_llama_weights(*files);
}

// The fixture's token stream as a raw-u16 file, the paper's eval format.
std::string write_raw_u16(const std::vector<int32_t>& tokens, const std::string& name) {
  const auto path = ll::test::fresh_temp_dir(name) / "tokens.bin";
  std::ofstream f(path, std::ios::binary);
  for (int32_t t : tokens) {
    const uint16_t v = uint16_t(t);
    f.write(reinterpret_cast<const char*>(&v), 2);
  }
  return path.string();
}

}  // namespace

TEST_CASE("tiny Llama logits and losses match Hugging Face") {
  Fixture fx;
  ll::CpuBackend backend;
  ll::LlamaModel model(backend, load("tests/fixtures/tiny_llama"));
  const std::vector<int32_t> all = fx.ref.read_i32("tokens");
  const std::vector<int32_t> tokens(all.begin(), all.begin() + 64);
  ll::ForwardSpec spec;

  const double logits_err =
      max_relative_error(model.logits(tokens, spec), fx.ref.read_f32("logits"));
  MESSAGE("logits max relative error " << logits_err);
  CHECK(logits_err <= 1e-4);

  const double loss_err =
      max_relative_error(model.next_token_losses(tokens, spec), fx.ref.read_f32("losses"));
  MESSAGE("losses max relative error " << loss_err);
  CHECK(loss_err <= 1e-4);

  SUBCASE("the classifier chunk size does not change the losses") {
    ll::ForwardSpec one_row = spec;
    one_row.classifier_chunk = 1;
    // BLAS may pick another routine per row count: equal to fp32 rounding, not bitwise.
    CHECK(max_relative_error(model.next_token_losses(tokens, one_row),
                             model.next_token_losses(tokens, spec)) <= 1e-6);
  }
}

TEST_CASE("perplexity protocols match the reference") {
  Fixture fx;
  ll::CpuBackend backend;
  ll::LlamaModel model(backend, load("tests/fixtures/tiny_llama"));
  const std::vector<int32_t> tokens = fx.ref.read_i32("tokens");
  const ll::TokenFile data =
      ll::TokenFile::open(write_raw_u16(tokens, "ppl_protocols"), ll::TokenFileFormat::RawU16,
                          model.config().vocab_size);
  REQUIRE(data.size() == int64_t(tokens.size()));

  SUBCASE("paper protocol, seq_len 64") {
    const auto windows = ll::ppl_windows(data.size(), 64, 256, ll::PplProtocol::Paper);
    CHECK(int64_t(windows.size()) == fx.count("paper_s64_windows"));
    const ll::PplResult r =
        ll::evaluate_perplexity(model, data, ll::PplProtocol::Paper, windows, {});
    MESSAGE("ppl " << r.ppl << " reference " << fx.scalar("paper_s64_ppl"));
    CHECK(rel(r.ppl, fx.scalar("paper_s64_ppl")) <= 1e-5);
    CHECK(rel(r.mean_loss, fx.scalar("paper_s64_mean_loss")) <= 1e-5);
    const auto ref_windows = fx.ref.read_f32("paper_s64_window_losses");
    REQUIRE(r.window_losses.size() == ref_windows.size());
    for (size_t w = 0; w < ref_windows.size(); ++w)
      CHECK(rel(r.window_losses[w], ref_windows[w]) <= 1e-5);
  }
  SUBCASE("paper protocol, seq_len 256 interpolated from context 256") {
    ll::ForwardSpec spec;
    const ll::LlamaConfig& c = model.config();
    spec.rope =
        ll::rope_for_context(c.rope_scaling, c.max_position_embeddings, 256, std::nullopt, 0.0)
            .rope;
    CHECK(spec.rope == ll::linear_rope_scaling(2.0));
    const auto windows = ll::ppl_windows(data.size(), 256, 256, ll::PplProtocol::Paper);
    CHECK(int64_t(windows.size()) == fx.count("paper_s256_c256_windows"));
    const ll::PplResult r =
        ll::evaluate_perplexity(model, data, ll::PplProtocol::Paper, windows, spec);
    MESSAGE("ppl " << r.ppl << " reference " << fx.scalar("paper_s256_c256_ppl"));
    CHECK(rel(r.ppl, fx.scalar("paper_s256_c256_ppl")) <= 1e-5);
  }
  SUBCASE("non-overlapping protocol, seq_len 64") {
    const auto windows = ll::ppl_windows(data.size(), 64, 256, ll::PplProtocol::NonOverlapping);
    const ll::PplResult r =
        ll::evaluate_perplexity(model, data, ll::PplProtocol::NonOverlapping, windows, {});
    CHECK(r.tokens_scored == fx.count("nonoverlap_s64_tokens_scored"));
    CHECK(r.tokens_scored == data.size() - 1);
    MESSAGE("ppl " << r.ppl << " reference " << fx.scalar("nonoverlap_s64_ppl"));
    CHECK(rel(r.ppl, fx.scalar("nonoverlap_s64_ppl")) <= 1e-5);
  }
}

TEST_CASE("a config's linear rope_scaling is honoured") {
  Fixture fx;
  auto files = ll::open_model_files(source_path("tests/fixtures/tiny_llama_rope2"));
  CHECK(files->config.rope_scaling == ll::linear_rope_scaling(2.0));
  ll::CpuBackend backend;
  ll::LlamaModel model(backend, ll::load_llama_weights(*files));
  ll::ForwardSpec spec;
  spec.rope = model.config().rope_scaling;  // what the tools apply without a context size
  const double err = max_relative_error(model.logits(fx.ref.read_i32("rope2_tokens"), spec),
                                        fx.ref.read_f32("rope2_logits"));
  MESSAGE("rope2 logits max relative error " << err);
  CHECK(err <= 1e-4);
  spec.rope = {};  // without interpolation the logits must differ
  CHECK(max_relative_error(model.logits(fx.ref.read_i32("rope2_tokens"), spec),
                           fx.ref.read_f32("rope2_logits")) > 1e-3);
}
