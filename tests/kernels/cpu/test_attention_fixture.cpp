// The CPU attention kernel against PyTorch implementations of LongLoRA's S2-Attn
// (tests/reference/make_fixtures.py): the official segment form, the paper's roll form,
// and dense causal attention, including a ragged last segment and GQA/MQA.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <string>

#include "kernels/cpu/attention.h"
#include "model/formats/safetensors.h"
#include "tests/test_paths.h"

namespace {

double relative_l2(const std::vector<float>& out, const std::vector<float>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double d = double(out[i]) - double(ref[i]);
    num += d * d;
    den += double(ref[i]) * double(ref[i]);
  }
  return std::sqrt(num / den);
}

}  // namespace

TEST_CASE("attention_forward matches the PyTorch S2-Attn reference") {
  const ll::SafetensorsFile fx =
      ll::read_safetensors(ll::test::source_path("tests/fixtures/s2attn_reference.safetensors"));
  for (int c = 1; c <= 4; ++c) {
    const std::string p = "case" + std::to_string(c) + "_";
    const int64_t n = fx.read_i32(p + "N")[0], g = fx.read_i32(p + "G")[0];
    const int64_t h = fx.read_i32(p + "H")[0], hkv = fx.read_i32(p + "Hkv")[0];
    const int64_t hd = fx.read_i32(p + "hd")[0];
    const auto q = fx.read_f32(p + "q", {n, h, hd});
    const auto k = fx.read_f32(p + "k", {n, hkv, hd});
    const auto v = fx.read_f32(p + "v", {n, hkv, hd});
    const std::pair<ll::AttnMode, const char*> modes[] = {{ll::AttnMode::Dense, "out_dense"},
                                                          {ll::AttnMode::S2, "out_s2"},
                                                          {ll::AttnMode::S2Roll, "out_roll"}};
    for (const auto& [mode, name] : modes) {
      CAPTURE(p + name);
      const auto ref = fx.read_f32(p + name, {n, h, hd});
      std::vector<float> out(ref.size(), std::numeric_limits<float>::quiet_NaN());  // poisoned
      const ll::AttentionPattern mask{mode, n, g, h};
      ll::cpu::attention_forward(out.data(), nullptr, q.data(), k.data(), v.data(), n, h, hkv, hd,
                                 mask);
      int64_t outside_tolerance = 0;  // |out - ref| <= atol + rtol * |ref| per element
      for (size_t i = 0; i < ref.size(); ++i) {
        REQUIRE(std::isfinite(out[i]));
        const double diff = std::fabs(double(out[i]) - double(ref[i]));
        if (diff > 1e-6 + 1e-4 * std::fabs(double(ref[i]))) ++outside_tolerance;
      }
      const double err = relative_l2(out, ref);
      MESSAGE(p << name << ": N=" << n << " G=" << g << " H=" << h << " Hkv=" << hkv
                << " relative L2 error " << err);
      CHECK(err < 1e-5);
      CHECK(outside_tolerance == 0);
    }
  }
}
