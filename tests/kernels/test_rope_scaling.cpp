// RoPE scaling types (kernels/rope_scaling.h) against transformers' own rotary embedding
// (tests/fixtures/rope_reference.safetensors, from tests/reference/make_rope_fixtures.py): the
// frequencies bit for bit given torch's own fp32 powers, within an ulp with ours; the CPU rope
// kernel's cos/sin; the JSON reader on every type and on hostile objects.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "common/error.h"
#include "kernels/cpu/rope.h"
#include "kernels/rope_scaling.h"
#include "model/formats/safetensors.h"
#include "tests/error_text.h"
#include "tests/kernels/kernel_test_util.h"
#include "tests/test_paths.h"

namespace {

using nlohmann::json;

struct FixtureCase {
  std::string name;
  json params;
  double theta;
  int64_t hd, mpe, seq_len;
  std::vector<int64_t> positions;
  double attention_scaling, effective_base;
};

std::vector<FixtureCase> fixture_cases(const ll::SafetensorsFile& f) {
  std::vector<FixtureCase> cases;
  for (const json& c : json::parse(f.metadata.at("cases"))) {
    cases.push_back({c.at("name"), c.at("rope_parameters"), c.at("rope_theta"), c.at("head_dim"),
                     c.at("max_position_embeddings"), c.at("seq_len"),
                     c.at("positions").get<std::vector<int64_t>>(), c.at("attention_scaling"),
                     c.at("effective_base")});
  }
  return cases;
}

int32_t bits(float x) {
  int32_t b;
  std::memcpy(&b, &x, sizeof b);
  return b;
}

// Distance in units in the last place (both values positive here).
int64_t ulps(float a, float b) { return std::abs(int64_t(bits(a)) - int64_t(bits(b))); }

const ll::SafetensorsFile& fixture() {
  static const ll::SafetensorsFile f =
      ll::read_safetensors(ll::test::source_path("tests/fixtures/rope_reference.safetensors"));
  return f;
}

// cos and sin [hd/2] at `position` through the CPU kernel: x = (1, ..., 1, 0, ..., 0) rotates
// into (cos, sin) per pair.
void kernel_cos_sin(const ll::RopeFrequencies& freqs, int64_t hd, int64_t position,
                    std::vector<float>& cs, std::vector<float>& sn) {
  std::vector<float> x(size_t(hd), 0.0f);  // [1, 1, hd]
  for (int64_t j = 0; j < hd / 2; ++j) x[size_t(j)] = 1.0f;
  ll::cpu::rope_forward(x.data(), 1, 1, hd, position, freqs);
  cs.assign(x.begin(), x.begin() + hd / 2);
  sn.assign(x.begin() + hd / 2, x.end());
}

}  // namespace

TEST_CASE("rope_frequencies reproduce transformers' inv_freq and attention scaling (fixture)") {
  const ll::SafetensorsFile& f = fixture();
  const auto cases = fixture_cases(f);
  REQUIRE(cases.size() >= 10);
  int64_t types_seen[5] = {};
  for (const FixtureCase& c : cases) {
    CAPTURE(c.name);
    const ll::RopeScaling s = ll::rope_scaling_from_json(c.params, c.mpe, c.name);
    ++types_seen[int(s.type)];
    const int64_t half = c.hd / 2;
    const auto want = f.read_f32(c.name + ".inv_freq", {half});
    const auto torch_powers = f.read_f32(c.name + ".powers", {half});

    // Dynamic's enlarged base is the same fp32 value (the others: theta).
    const double base = ll::rope_effective_base(s, c.theta, c.hd, c.mpe, c.seq_len);
    CHECK(float(base) == float(c.effective_base));

    // Given torch's own powers, every later step is bit-identical.
    const ll::RopeFrequencies exact =
        ll::rope_frequencies_from_powers(s, c.theta, c.hd, torch_powers);
    CHECK(exact.attention_scaling == float(c.attention_scaling));
    int64_t differ = 0;
    for (int64_t j = 0; j < half; ++j) differ += exact.inv_freq[size_t(j)] != want[size_t(j)];
    CHECK(differ == 0);

    // With our powers (powf, correctly rounded; torch's SLEEF pow is within 1 ulp of it): the
    // powers within an ulp of torch's, the frequencies within 2 (the reciprocal of two values
    // an ulp apart can land 2 ulps apart, and llama3's smoothing mixes two of them).
    const auto ours = ll::rope_frequencies(s, c.theta, c.hd, c.mpe, c.seq_len);
    const auto our_powers = ll::rope_base_powers(base, c.hd);
    int64_t worst_power = 0, worst = 0;
    for (int64_t j = 0; j < half; ++j) {
      worst_power = std::max(worst_power, ulps(our_powers[size_t(j)], torch_powers[size_t(j)]));
      worst = std::max(worst, ulps(ours.inv_freq[size_t(j)], want[size_t(j)]));
    }
    CHECK(worst_power <= 1);
    CHECK(worst <= 2);
    CHECK(ours.attention_scaling == float(c.attention_scaling));
    MESSAGE(c.name << ": inv_freq within " << worst << " ulp of transformers");
  }
  for (int t = 0; t < 5; ++t) CHECK(types_seen[t] > 0);
}

TEST_CASE("cpu rope_forward gives transformers' cos and sin for every scaling type (fixture)") {
  const ll::SafetensorsFile& f = fixture();
  for (const FixtureCase& c : fixture_cases(f)) {
    CAPTURE(c.name);
    const ll::RopeScaling s = ll::rope_scaling_from_json(c.params, c.mpe, c.name);
    const int64_t half = c.hd / 2, n_pos = int64_t(c.positions.size());
    const auto want_cos = f.read_f32(c.name + ".cos", {n_pos, half});
    const auto want_sin = f.read_f32(c.name + ".sin", {n_pos, half});
    const auto want_inv = f.read_f32(c.name + ".inv_freq", {half});
    const ll::RopeFrequencies torch_freqs{want_inv, float(c.attention_scaling)};
    const ll::RopeFrequencies ours = ll::rope_frequencies(s, c.theta, c.hd, c.mpe, c.seq_len);
    const double a = c.attention_scaling;
    double worst_same = 0.0, worst_ours = 0.0;
    for (int64_t p = 0; p < n_pos; ++p) {
      const int64_t pos = c.positions[size_t(p)];
      std::vector<float> cs, sn, cs2, sn2;
      // Same frequencies: only cos/sin differ (ours correctly rounded, torch's SLEEF within an
      // ulp), then the same fp32 product with the attention scaling.
      kernel_cos_sin(torch_freqs, c.hd, pos, cs, sn);
      kernel_cos_sin(ours, c.hd, pos, cs2, sn2);
      for (int64_t j = 0; j < half; ++j) {
        const size_t i = size_t(p * half + j);
        const double d = std::max(std::fabs(double(cs[size_t(j)]) - want_cos[i]),
                                  std::fabs(double(sn[size_t(j)]) - want_sin[i]));
        worst_same = std::max(worst_same, d);
        CHECK(d <= a * std::ldexp(1.0, -23));
        // Our own frequencies: the angle moves by pos * |inv_freq difference| (an ulp of
        // inv_freq, see above) plus an ulp of the angle's rounding.
        const double dinv = std::fabs(double(ours.inv_freq[size_t(j)]) - want_inv[size_t(j)]);
        const double angle = double(pos) * want_inv[size_t(j)];
        const double bound =
            a * (std::ldexp(1.0, -23) + double(pos) * dinv + std::ldexp(angle, -23));
        const double d2 = std::max(std::fabs(double(cs2[size_t(j)]) - want_cos[i]),
                                   std::fabs(double(sn2[size_t(j)]) - want_sin[i]));
        worst_ours = std::max(worst_ours, d2);
        CHECK(d2 <= bound);
      }
    }
    MESSAGE(c.name << ": cos/sin max |diff| " << worst_same << " (transformers' inv_freq), "
                   << worst_ours << " (ours)");
  }
}

TEST_CASE("rope_backward is the transpose of rope_forward with an attention scaling") {
  ll::RopeScaling s;
  s.type = ll::RopeType::Yarn;
  s.factor = 4.0;
  s.original_max_position_embeddings = 64;
  const ll::RopeFrequencies freqs = ll::rope_frequencies(s, 10000.0, 16, 64, 0);
  REQUIRE(freqs.attention_scaling > 1.1f);
  for (uint64_t seed : ll::test::test_seeds()) {
    std::mt19937_64 rng(seed);
    const int64_t n = 9, heads = 3, hd = 16;
    const auto x = ll::test::random_uniform(rng, size_t(n * heads * hd));
    const auto y = ll::test::random_uniform(rng, size_t(n * heads * hd));
    auto fx = x, by = y;  // [N, heads, hd]
    ll::cpu::rope_forward(fx.data(), n, heads, hd, 200, freqs);
    ll::cpu::rope_backward(by.data(), n, heads, hd, 200, freqs);
    double lhs = 0.0, rhs = 0.0, norm = 0.0;
    for (size_t i = 0; i < x.size(); ++i) {
      lhs += double(fx[i]) * y[i];  // <R x, y>
      rhs += double(x[i]) * by[i];  // <x, R^T y>
      norm += std::fabs(double(x[i]) * y[i]);
    }
    CHECK(std::fabs(lhs - rhs) <= 1e-6 * norm);
    // The rotation scales lengths by the attention scaling: |R x| = a |x|.
    double nx = 0.0, nfx = 0.0;
    for (size_t i = 0; i < x.size(); ++i) nx += double(x[i]) * x[i], nfx += double(fx[i]) * fx[i];
    CHECK(std::sqrt(nfx) == doctest::Approx(freqs.attention_scaling * std::sqrt(nx)).epsilon(1e-6));
  }
}

TEST_CASE("rope frequencies: dynamic depends on seq_len only beyond max_position_embeddings") {
  ll::RopeScaling s;
  s.type = ll::RopeType::Dynamic;
  s.factor = 2.0;
  const auto plain = ll::rope_frequencies({}, 10000.0, 64, 2048, 0);
  CHECK(ll::rope_frequencies(s, 10000.0, 64, 2048, 1).inv_freq == plain.inv_freq);
  CHECK(ll::rope_frequencies(s, 10000.0, 64, 2048, 2048).inv_freq == plain.inv_freq);
  const auto longer = ll::rope_frequencies(s, 10000.0, 64, 2048, 4096);
  CHECK(longer.inv_freq[0] == 1.0f);  // theta'^0
  CHECK(longer.inv_freq[31] < plain.inv_freq[31]);
  CHECK(ll::rope_frequencies(s, 10000.0, 64, 2048, 8192).inv_freq[31] < longer.inv_freq[31]);
}

TEST_CASE("rope scaling JSON: every type reads back what it writes") {
  ll::RopeScaling linear = ll::linear_rope_scaling(25.0);
  ll::RopeScaling dynamic;
  dynamic.type = ll::RopeType::Dynamic;
  dynamic.factor = 2.5;
  ll::RopeScaling llama3;
  llama3.type = ll::RopeType::Llama3;
  llama3.factor = 8.0;
  llama3.original_max_position_embeddings = 8192;
  ll::RopeScaling yarn;
  yarn.type = ll::RopeType::Yarn;
  yarn.factor = 4.0;
  yarn.original_max_position_embeddings = 32768;
  ll::RopeScaling yarn_full = yarn;
  yarn_full.beta_fast = 16.0;
  yarn_full.beta_slow = 2.0;
  yarn_full.attention_factor = 1.25;
  yarn_full.mscale = 0.707;
  yarn_full.mscale_all_dim = 1.0;
  yarn_full.truncate = false;
  for (const ll::RopeScaling& s : {ll::RopeScaling{}, linear, dynamic, llama3, yarn, yarn_full}) {
    const json j = ll::rope_scaling_to_json(s);
    CAPTURE(j.dump());
    if (s.type == ll::RopeType::Default) {
      CHECK(j.is_null());
      continue;
    }
    CHECK(ll::rope_scaling_from_json(j, 0, "x") == s);
    CHECK(ll::rope_scaling_from_json(json::parse(j.dump()), 0, "x") == s);
  }
  CHECK(ll::rope_scaling_to_json(linear) == json{{"type", "linear"}, {"factor", 25.0}});
  CHECK(!ll::rope_scaling_to_json(yarn).contains("attention_factor"));  // unset stays unset
  // transformers-5 rope_parameters (rope_theta inside) and the old "type" spelling.
  const json params = {{"rope_type", "llama3"},   {"rope_theta", 500000.0},
                       {"factor", 8.0},           {"low_freq_factor", 1.0},
                       {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}};
  CHECK(ll::rope_scaling_from_json(params, 131072, "x") == llama3);
  CHECK(ll::rope_scaling_from_json({{"type", "dynamic"}, {"factor", 2.5}}, 0, "x") == dynamic);
  CHECK(ll::rope_scaling_from_json({{"rope_type", "default"}}, 0, "x") == ll::RopeScaling{});
  // yarn without original_max_position_embeddings: transformers' default, the model's context;
  // "factor": null: max / original.
  const auto y = ll::rope_scaling_from_json({{"rope_type", "yarn"}, {"factor", 4.0}}, 4096, "x");
  CHECK(y.original_max_position_embeddings == 4096);
  const auto yn = ll::rope_scaling_from_json(
      {{"rope_type", "yarn"}, {"factor", nullptr}, {"original_max_position_embeddings", 1024}},
      4096, "x");
  CHECK(yn.factor == 4.0);
  CHECK(ll::describe_rope_scaling(llama3) ==
        "llama3 (factor 8, original context 8192, low_freq_factor 1, high_freq_factor 4)");
  CHECK(ll::describe_rope_scaling(yarn).rfind("yarn (factor 4, original context 32768, "
                                              "attention factor 1.138",
                                              0) == 0);
  CHECK(ll::rope_context_length(llama3, 131072) == 131072);
  CHECK(ll::rope_context_length(yarn, 32768) == 131072);
  CHECK(ll::rope_context_length(linear, 4096) == 102400);
  CHECK(ll::rope_context_length({}, 4096) == 4096);
}

TEST_CASE("rope scaling JSON: hostile objects get a clear error naming the field") {
  const json llama3 = {{"rope_type", "llama3"},
                       {"factor", 8.0},
                       {"low_freq_factor", 1.0},
                       {"high_freq_factor", 4.0},
                       {"original_max_position_embeddings", 8192}};
  const json yarn = {
      {"rope_type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 4096}};
  const auto with = [](json o, const char* key, json value) {
    o[key] = std::move(value);
    return o;
  };
  const auto without = [](json o, const char* key) {
    o.erase(key);
    return o;
  };
  struct Bad {
    json object;
    const char* expect;
  };
  const Bad bad[] = {
      {json::array({1}), "must be null or an object"},
      {json::object(), "no \"rope_type\""},
      {{{"rope_type", 3}}, "\"rope_type\" must be a string"},
      {{{"rope_type", "longrope"}, {"factor", 2.0}}, "\"longrope\" is not supported"},
      {{{"rope_type", "linear"}, {"type", "yarn"}, {"factor", 2.0}}, "disagree"},
      {{{"type", "linear"}}, "needs a numeric \"factor\""},
      {{{"type", "linear"}, {"factor", "4"}}, "\"factor\" must be a number"},
      {{{"type", "linear"}, {"factor", 0.5}}, "\"factor\" = 0.5 must be a finite number >= 1"},
      {{{"type", "dynamic"}, {"factor", -2}}, "\"factor\" = -2"},
      {without(llama3, "original_max_position_embeddings"), "original_max_position_embeddings"},
      {with(llama3, "original_max_position_embeddings", 8192.5),
       "\"original_max_position_embeddings\" must be an integer"},
      {with(llama3, "original_max_position_embeddings", -1),
       "\"original_max_position_embeddings\" must be an integer"},
      {with(llama3, "low_freq_factor", 4.0), "\"high_freq_factor\" = 4 must be finite and greater"},
      {with(llama3, "high_freq_factor", "4"), "\"high_freq_factor\" must be a number"},
      {without(llama3, "low_freq_factor"), "needs \"low_freq_factor\""},
      {with(llama3, "factor", 0.9), "\"factor\" = 0.9"},
      {with(yarn, "truncate", 1), "\"truncate\" must be true or false"},
      {with(yarn, "attention_factor", -1.0), "\"attention_factor\" = -1"},
      {with(yarn, "attention_factor", "big"), "\"attention_factor\" must be a number"},
      {with(with(yarn, "beta_fast", 1.0), "beta_slow", 8.0), "beta_fast >= beta_slow"},
      {with(yarn, "mscale", json::array()), "\"mscale\" must be a number"},
      {with(yarn, "partial_rotary_factor", 0.5), "\"partial_rotary_factor\" = 0.5"},
  };
  for (const Bad& b : bad) {
    CAPTURE(b.object.dump());
    const std::string e =
        ll::test::error_of([&] { ll::rope_scaling_from_json(b.object, 4096, "cfg.json: rope"); });
    CAPTURE(e);
    CHECK(ll::test::contains(e, "cfg.json: rope"));
    CHECK(ll::test::contains(e, b.expect));
  }
  // yarn without original_max_position_embeddings and no model context to default to.
  CHECK(ll::test::contains(ll::test::error_of([&] {
                             ll::rope_scaling_from_json(without(yarn,
                                                                "original_max_position_"
                                                                "embeddings"),
                                                        0, "r");
                           }),
                           "needs \"original_max_position_embeddings\""));
  // Frequencies refuse an invalid scaling built in code, and odd head dims.
  ll::RopeScaling s = ll::linear_rope_scaling(2.0);
  s.factor = std::nan("");
  CHECK_THROWS_AS(ll::rope_frequencies(s, 10000.0, 64, 0, 0), ll::Error);
  CHECK_THROWS_AS(ll::rope_frequencies({}, 10000.0, 7, 0, 0), ll::Error);
  CHECK_THROWS_AS(ll::rope_frequencies({}, -1.0, 8, 0, 0), ll::Error);
}
