// train_longlora's RoPE scaling (engine/train/training_setup.h: training_rope, over
// model/position_interpolation.h's rope_for_context): the type from --rope-scaling or the model,
// the factor from -ctx over the model's original context or --rope-factor, and a -ctx within
// the model's context keeping its scaling.
#include <doctest/doctest.h>

#include "common/error.h"
#include "engine/train/training_setup.h"
#include "tests/error_text.h"

namespace {

ll::LlamaConfig config_with(ll::RopeScaling rope, int64_t max_positions) {
  ll::LlamaConfig c;
  c.max_position_embeddings = max_positions;
  c.rope_scaling = rope;
  return c;
}

ll::RopeScaling rope_of(const ll::LlamaConfig& c, int64_t ctx, const char* type = "auto",
                        double factor = 0.0) {
  ll::TrainOptions o;
  o.ctx = ctx;
  o.rope_scaling = type;
  o.rope_factor = factor;
  return ll::training_rope(o, c).rope;
}

ll::RopeScaling llama31() {
  ll::RopeScaling s;
  s.type = ll::RopeType::Llama3;
  s.factor = 8.0;
  s.original_max_position_embeddings = 8192;
  return s;
}

ll::RopeScaling qwen_yarn() {
  ll::RopeScaling s;
  s.type = ll::RopeType::Yarn;
  s.factor = 4.0;
  s.original_max_position_embeddings = 32768;
  s.attention_factor = 1.2;
  s.beta_fast = 16.0;
  return s;
}

}  // namespace

TEST_CASE("a model without scaling: linear, ceil(ctx / max_position_embeddings) as LongLoRA") {
  const ll::LlamaConfig llama2 = config_with({}, 4096);
  CHECK(rope_of(llama2, 100000) == ll::linear_rope_scaling(25.0));
  CHECK(rope_of(llama2, 8192) == ll::linear_rope_scaling(2.0));
  CHECK(rope_of(llama2, 8193) == ll::linear_rope_scaling(3.0));
  CHECK(rope_of(llama2, 4096) == ll::RopeScaling{});  // within the context: unchanged
  CHECK(rope_of(llama2, 8192, "auto", 3.0) == ll::linear_rope_scaling(3.0));
  CHECK(rope_of(llama2, 2048, "linear", 2.0) == ll::linear_rope_scaling(2.0));
  // yarn and llama3 on a model without scaling: ctx / max_position_embeddings, their defaults.
  const ll::RopeScaling y = rope_of(llama2, 16384, "yarn");
  CHECK(y.type == ll::RopeType::Yarn);
  CHECK(y.factor == 4.0);
  CHECK(y.original_max_position_embeddings == 4096);
  CHECK(!y.beta_fast);
  const ll::RopeScaling l = rope_of(llama2, 10000, "llama3");
  CHECK(l.type == ll::RopeType::Llama3);
  CHECK(l.factor == 10000.0 / 4096.0);
  CHECK(l.low_freq_factor == 1.0);
  CHECK(l.high_freq_factor == 4.0);
}

TEST_CASE("a model with scaling: its own type, the factor over its original context") {
  // Llama-3.1: 131072 tokens covered; beyond, llama3 with ctx / 8192.
  const ll::LlamaConfig l31 = config_with(llama31(), 131072);
  CHECK(rope_of(l31, 131072) == llama31());
  CHECK(rope_of(l31, 4096) == llama31());
  ll::RopeScaling want = llama31();
  want.factor = 64.0;
  CHECK(rope_of(l31, 524288) == want);
  want.factor = 16.0;
  CHECK(rope_of(l31, 8192, "auto", 16.0) == want);  // --rope-factor applies even within
  // Linear on Llama-3.1: LongLoRA's rule over max_position_embeddings.
  CHECK(rope_of(l31, 262144, "linear") == ll::linear_rope_scaling(2.0));
  // Qwen2.5 with yarn (4 x 32768 covered): its other fields stay, the stale attention factor
  // goes (it belonged to the old factor).
  const ll::LlamaConfig qwen = config_with(qwen_yarn(), 32768);
  CHECK(rope_of(qwen, 100000) == qwen_yarn());
  const ll::RopeScaling y = rope_of(qwen, 262144);
  CHECK(y.type == ll::RopeType::Yarn);
  CHECK(y.factor == 8.0);
  CHECK(y.original_max_position_embeddings == 32768);
  CHECK(y.beta_fast == 16.0);
  CHECK(!y.attention_factor);
  // A linear model (LongLoRA-merged, 4096 x 8) extended further: linear, ceil(ctx / 4096).
  const ll::LlamaConfig merged = config_with(ll::linear_rope_scaling(8.0), 4096);
  CHECK(rope_of(merged, 32768) == ll::linear_rope_scaling(8.0));
  CHECK(rope_of(merged, 65536) == ll::linear_rope_scaling(16.0));
}

TEST_CASE("training refuses dynamic NTK beyond the context and bad factors") {
  ll::RopeScaling dynamic;
  dynamic.type = ll::RopeType::Dynamic;
  dynamic.factor = 2.0;
  const ll::LlamaConfig c = config_with(dynamic, 4096);
  CHECK(rope_of(c, 4096) == dynamic);  // plain RoPE within max_position_embeddings
  CHECK(ll::test::contains(ll::test::error_of([&] { rope_of(c, 16384); }), "dynamic NTK"));
  CHECK(rope_of(c, 16384, "yarn").type == ll::RopeType::Yarn);
  CHECK(ll::test::contains(ll::test::error_of([&] { rope_of(c, 16384, "ntk"); }),
                           "--rope-scaling ntk"));
  CHECK(ll::test::contains(ll::test::error_of([&] { rope_of(c, 16384, "yarn", 0.5); }),
                           "factor 0.5"));
}
