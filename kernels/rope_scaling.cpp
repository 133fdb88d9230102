#include "kernels/rope_scaling.h"

#include <fmt/format.h>
#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <numbers>

#include "common/error.h"

// Every fp32 step below is one torch op on an fp32 tensor, rounded once: a Python number
// meeting an fp32 tensor is first rounded to fp32 (float(x) here); `a / t` for a number a is
// torch's t.reciprocal() * a (two roundings); Python-side arithmetic (math.log, ints) is double.
// This file is compiled with -ffp-contract=off (cmake/layers.cmake): a fused multiply-add
// would round once where torch rounds twice.

namespace ll {

const char* rope_type_name(RopeType type) {
  switch (type) {
    case RopeType::Default:
      return "default";
    case RopeType::Linear:
      return "linear";
    case RopeType::Dynamic:
      return "dynamic";
    case RopeType::Yarn:
      return "yarn";
    case RopeType::Llama3:
      return "llama3";
  }
  return "?";
}

std::optional<RopeType> rope_type_from_name(std::string_view name) {
  for (RopeType t :
       {RopeType::Default, RopeType::Linear, RopeType::Dynamic, RopeType::Yarn, RopeType::Llama3})
    if (name == rope_type_name(t)) return t;
  return std::nullopt;
}

bool RopeScaling::operator==(const RopeScaling& o) const {
  return type == o.type && factor == o.factor &&
         original_max_position_embeddings == o.original_max_position_embeddings &&
         low_freq_factor == o.low_freq_factor && high_freq_factor == o.high_freq_factor &&
         beta_fast == o.beta_fast && beta_slow == o.beta_slow &&
         attention_factor == o.attention_factor && mscale == o.mscale &&
         mscale_all_dim == o.mscale_all_dim && truncate == o.truncate;
}

void validate_rope_scaling(const RopeScaling& s, const std::string& where) {
  const char* type = rope_type_name(s.type);
  if (s.type == RopeType::Default) return;
  LL_CHECK(std::isfinite(s.factor) && s.factor >= 1.0,
           "{}: rope scaling {}: \"factor\" = {} must be a finite number >= 1", where, type,
           s.factor);
  if (s.type == RopeType::Yarn || s.type == RopeType::Llama3) {
    LL_CHECK(s.original_max_position_embeddings > 0 &&
                 s.original_max_position_embeddings <= (int64_t(1) << 30),
             "{}: rope scaling {}: \"original_max_position_embeddings\" = {} must be in [1, 2^30]",
             where, type, s.original_max_position_embeddings);
  }
  if (s.type == RopeType::Llama3) {
    LL_CHECK(std::isfinite(s.low_freq_factor) && s.low_freq_factor > 0.0,
             "{}: rope scaling llama3: \"low_freq_factor\" = {} must be a finite number > 0", where,
             s.low_freq_factor);
    LL_CHECK(std::isfinite(s.high_freq_factor) && s.high_freq_factor > s.low_freq_factor,
             "{}: rope scaling llama3: \"high_freq_factor\" = {} must be finite and greater than "
             "\"low_freq_factor\" = {}",
             where, s.high_freq_factor, s.low_freq_factor);
  }
  if (s.type == RopeType::Yarn) {
    const auto finite = [&](const std::optional<double>& v, const char* key) {
      LL_CHECK(!v || std::isfinite(*v), "{}: rope scaling yarn: \"{}\" = {} must be finite", where,
               key, v.value_or(0.0));
    };
    finite(s.beta_fast, "beta_fast");
    finite(s.beta_slow, "beta_slow");
    finite(s.mscale, "mscale");
    finite(s.mscale_all_dim, "mscale_all_dim");
    // transformers: `beta_fast or 32`, `beta_slow or 1` (0 means unset).
    const double fast = s.beta_fast.value_or(0.0) != 0.0 ? *s.beta_fast : 32.0;
    const double slow = s.beta_slow.value_or(0.0) != 0.0 ? *s.beta_slow : 1.0;
    LL_CHECK(fast > 0.0 && slow > 0.0 && fast >= slow,
             "{}: rope scaling yarn: \"beta_fast\" = {} and \"beta_slow\" = {} must be > 0 with "
             "beta_fast >= beta_slow",
             where, fast, slow);
    LL_CHECK(!s.attention_factor || (std::isfinite(*s.attention_factor) && *s.attention_factor > 0),
             "{}: rope scaling yarn: \"attention_factor\" = {} must be a finite number > 0", where,
             s.attention_factor.value_or(0.0));
  }
}

int64_t rope_context_length(const RopeScaling& s, int64_t max_position_embeddings) {
  switch (s.type) {
    case RopeType::Default:
      return max_position_embeddings;
    case RopeType::Linear:
    case RopeType::Dynamic:
      return int64_t(std::floor(double(max_position_embeddings) * s.factor));
    case RopeType::Yarn:
    case RopeType::Llama3:
      return std::max<int64_t>(
          max_position_embeddings,
          int64_t(std::floor(double(s.original_max_position_embeddings) * s.factor)));
  }
  return max_position_embeddings;
}

namespace {

void check_head_dim(int64_t head_dim) {
  LL_CHECK(head_dim >= 2 && head_dim % 2 == 0 && head_dim <= (int64_t(1) << 16),
           "rope: head_dim {} must be even and in [2, 65536]", head_dim);
}

// transformers' yarn get_mscale, in double.
double yarn_mscale(double scale, double mscale) {
  if (scale <= 1.0) return 1.0;
  return 0.1 * mscale * std::log(scale) + 1.0;
}

// Python's truthiness of an optional number (None and 0 are false).
bool truthy(const std::optional<double>& v) { return v && *v != 0.0; }

float yarn_attention_factor(const RopeScaling& s) {
  if (s.attention_factor) return float(*s.attention_factor);
  if (truthy(s.mscale) && truthy(s.mscale_all_dim))
    return float(yarn_mscale(s.factor, *s.mscale) / yarn_mscale(s.factor, *s.mscale_all_dim));
  return float(yarn_mscale(s.factor, 1.0));
}

// yarn's find_correction_dim, in double as Python computes it.
double yarn_correction_dim(double rotations, int64_t dim, double base, int64_t original) {
  return (double(dim) * std::log(double(original) / (rotations * 2.0 * std::numbers::pi))) /
         (2.0 * std::log(base));
}

void apply_yarn(const RopeScaling& s, double theta, int64_t dim, const std::vector<float>& powers,
                RopeFrequencies& out) {
  const double fast = truthy(s.beta_fast) ? *s.beta_fast : 32.0;
  const double slow = truthy(s.beta_slow) ? *s.beta_slow : 1.0;
  double low = yarn_correction_dim(fast, dim, theta, s.original_max_position_embeddings);
  double high = yarn_correction_dim(slow, dim, theta, s.original_max_position_embeddings);
  if (s.truncate.value_or(true)) {
    low = std::floor(low);
    high = std::ceil(high);
  }
  low = std::max(low, 0.0);
  high = std::min(high, double(dim - 1));
  if (low == high) high += 0.001;  // transformers: prevent singularity
  const float low_f = float(low), span_f = float(high - low);
  const float factor = float(s.factor);
  for (size_t j = 0; j < powers.size(); ++j) {
    const float extrapolation = (1.0f / powers[j]) * 1.0f;
    const float interpolation = (1.0f / (factor * powers[j])) * 1.0f;
    const float ramp = std::clamp((float(j) - low_f) / span_f, 0.0f, 1.0f);
    const float extrapolation_factor = 1.0f - ramp;
    const float a = interpolation * (1.0f - extrapolation_factor);
    const float b = extrapolation * extrapolation_factor;
    out.inv_freq[j] = a + b;
  }
  out.attention_scaling = yarn_attention_factor(s);
}

void apply_llama3(const RopeScaling& s, RopeFrequencies& out) {
  const double original = double(s.original_max_position_embeddings);
  const float low_wavelen = float(original / s.low_freq_factor);    // compared in fp32
  const float high_wavelen = float(original / s.high_freq_factor);  // compared in fp32
  const float two_pi = float(2.0 * std::numbers::pi), original_f = float(original);
  const float factor = float(s.factor), low = float(s.low_freq_factor);
  const float band = float(s.high_freq_factor - s.low_freq_factor);
  for (float& f : out.inv_freq) {
    const float wavelen = (1.0f / f) * two_pi;
    float scaled = wavelen > low_wavelen ? f / factor : f;
    if (!(wavelen < high_wavelen) && !(wavelen > low_wavelen)) {
      const float smooth = ((1.0f / wavelen) * original_f - low) / band;
      const float a = ((1.0f - smooth) * scaled) / factor;
      const float b = smooth * scaled;
      scaled = a + b;
    }
    f = scaled;
  }
}

}  // namespace

double rope_effective_base(const RopeScaling& s, double theta, int64_t head_dim,
                           int64_t max_position_embeddings, int64_t seq_len) {
  if (s.type != RopeType::Dynamic) return theta;
  LL_CHECK(max_position_embeddings > 0, "rope: dynamic scaling needs max_position_embeddings > 0");
  LL_CHECK(head_dim >= 4,
           "rope: dynamic scaling needs head_dim >= 4 (its exponent is hd / (hd - 2))");
  const double dim = double(head_dim), mpe = double(max_position_embeddings);
  const double exponent = dim / (dim - 2.0);
  if (seq_len <= max_position_embeddings) {
    // At model init transformers computes with seq_len = max_position_embeddings, in double
    // (plain Python numbers); a forward never recomputes while seq_len stays within it.
    return theta * std::pow((s.factor * mpe / mpe) - (s.factor - 1.0), exponent);
  }
  // In a forward, seq_len = max(position_ids) + 1 is an int64 tensor: the arithmetic becomes
  // fp32 tensor ops (pow with a double exponent: torch computes it in double, then rounds).
  const float t1 = float(s.factor) * float(seq_len);
  const float t2 = t1 / float(max_position_embeddings);
  const float t3 = t2 - float(s.factor - 1.0);
  const float t4 = float(std::pow(double(t3), exponent));
  return double(float(theta) * t4);
}

std::vector<float> rope_base_powers(double base, int64_t head_dim) {
  check_head_dim(head_dim);
  LL_CHECK(std::isfinite(base) && base > 0.0, "rope: theta {} must be a finite number > 0", base);
  std::vector<float> powers(size_t(head_dim / 2));  // [hd/2]
  const float b = float(base);
  for (int64_t j = 0; j < head_dim / 2; ++j) {
    const float exponent = float(2 * j) / float(head_dim);
    powers[size_t(j)] = std::pow(b, exponent);  // powf: correctly rounded (torch: SLEEF, 1 ulp)
  }
  return powers;
}

RopeFrequencies rope_frequencies_from_powers(const RopeScaling& s, double theta, int64_t head_dim,
                                             const std::vector<float>& powers) {
  check_head_dim(head_dim);
  validate_rope_scaling(s, "rope");
  LL_CHECK(int64_t(powers.size()) == head_dim / 2, "rope: {} powers for head_dim {}", powers.size(),
           head_dim);
  RopeFrequencies out;
  out.inv_freq.resize(powers.size());  // [hd/2]
  if (s.type == RopeType::Yarn) {
    apply_yarn(s, theta, head_dim, powers, out);
    return out;
  }
  // 1.0 / powers is torch's reciprocal() * 1.0: exact IEEE division.
  for (size_t j = 0; j < powers.size(); ++j) out.inv_freq[j] = 1.0f / powers[j];
  if (s.type == RopeType::Linear) {
    const float factor = float(s.factor);
    for (float& f : out.inv_freq) f = f / factor;
  } else if (s.type == RopeType::Llama3) {
    apply_llama3(s, out);
  }
  return out;
}

RopeFrequencies rope_frequencies(const RopeScaling& s, double theta, int64_t head_dim,
                                 int64_t max_position_embeddings, int64_t seq_len) {
  check_head_dim(head_dim);
  validate_rope_scaling(s, "rope");
  const double base = rope_effective_base(s, theta, head_dim, max_position_embeddings, seq_len);
  return rope_frequencies_from_powers(s, theta, head_dim, rope_base_powers(base, head_dim));
}

std::string describe_rope_scaling(const RopeScaling& s) {
  switch (s.type) {
    case RopeType::Default:
      return "default (no scaling)";
    case RopeType::Linear:
      return fmt::format("linear (factor {})", s.factor);
    case RopeType::Dynamic:
      return fmt::format("dynamic NTK (factor {})", s.factor);
    case RopeType::Yarn:
      return fmt::format("yarn (factor {}, original context {}, attention factor {})", s.factor,
                         s.original_max_position_embeddings, yarn_attention_factor(s));
    case RopeType::Llama3:
      return fmt::format(
          "llama3 (factor {}, original context {}, low_freq_factor {}, high_freq_factor {})",
          s.factor, s.original_max_position_embeddings, s.low_freq_factor, s.high_freq_factor);
  }
  return "?";
}

// ---- JSON

namespace {

using nlohmann::json;

const json* member(const json& o, const char* key) {
  auto it = o.find(key);
  return (it == o.end() || it->is_null()) ? nullptr : &*it;
}

double number_field(const json& v, const char* key, const std::string& where) {
  LL_CHECK(v.is_number(), "{}: field \"{}\" must be a number, found {}", where, key, v.dump());
  return v.get<double>();
}

std::optional<double> optional_number(const json& o, const char* key, const std::string& where) {
  const json* v = member(o, key);
  if (!v) return std::nullopt;
  return number_field(*v, key, where);
}

int64_t positive_int_field(const json& v, const char* key, const std::string& where) {
  // 8192.0 is an integer to Python's json too, but transformers requires an int: so do we.
  LL_CHECK(v.is_number_integer() && (v.is_number_unsigned() || v.get<int64_t>() > 0) &&
               v.get<uint64_t>() <= (uint64_t(1) << 30),
           "{}: field \"{}\" must be an integer in [1, 2^30], found {}", where, key, v.dump());
  return v.get<int64_t>();
}

}  // namespace

RopeScaling rope_scaling_from_json(const json& o, int64_t max_position_embeddings,
                                   const std::string& where) {
  LL_CHECK(o.is_object(), "{} must be null or an object, found {}", where, o.dump());
  const json* type = member(o, "rope_type");
  const json* old_type = member(o, "type");
  LL_CHECK(type || old_type,
           "{}: no \"rope_type\" (or \"type\"); one of default, linear, dynamic, "
           "yarn, llama3 is needed",
           where);
  for (const json* t : {type, old_type})
    LL_CHECK(!t || t->is_string(), "{}: field \"rope_type\" must be a string, found {}", where,
             t->dump());
  LL_CHECK(!type || !old_type || *type == *old_type,
           "{}: \"rope_type\" {} and \"type\" {} disagree", where, type->dump(), old_type->dump());
  const std::string name = (type ? type : old_type)->get<std::string>();
  const std::optional<RopeType> kind = rope_type_from_name(name);
  LL_CHECK(kind,
           "{}: rope type \"{}\" is not supported; supported: default, linear, dynamic, "
           "yarn, llama3",
           where, name);
  if (const json* p = member(o, "partial_rotary_factor")) {
    LL_CHECK(number_field(*p, "partial_rotary_factor", where) == 1.0,
             "{}: \"partial_rotary_factor\" = {} is not supported (Llama models rotate the whole "
             "head)",
             where, p->dump());
  }
  RopeScaling s;
  s.type = *kind;
  if (s.type == RopeType::Default) return s;

  const json* ompe = member(o, "original_max_position_embeddings");
  if (ompe) {
    s.original_max_position_embeddings =
        positive_int_field(*ompe, "original_max_position_embeddings", where);
  } else if (s.type == RopeType::Llama3) {
    fail(
        "{}: rope type llama3 needs \"original_max_position_embeddings\" (8192 for Llama-3.1 "
        "and 3.2); transformers would silently use max_position_embeddings instead",
        where);
  } else if (s.type == RopeType::Yarn) {
    LL_CHECK(max_position_embeddings > 0,
             "{}: rope type yarn needs \"original_max_position_embeddings\"", where);
    s.original_max_position_embeddings = max_position_embeddings;  // transformers' default
  }

  const json* factor = member(o, "factor");
  if (factor) {
    s.factor = number_field(*factor, "factor", where);
  } else if (s.type == RopeType::Yarn && o.contains("factor") && max_position_embeddings > 0) {
    // "factor": null: transformers uses max_position_embeddings / original (DeepSeek style).
    s.factor = double(max_position_embeddings) / double(s.original_max_position_embeddings);
  } else {
    fail("{}: rope type {} needs a numeric \"factor\"", where, name);
  }

  if (s.type == RopeType::Llama3) {
    for (const char* key : {"low_freq_factor", "high_freq_factor"}) {
      const json* v = member(o, key);
      LL_CHECK(v, "{}: rope type llama3 needs \"{}\" (Llama-3.1: low 1, high 4)", where, key);
      (std::string_view(key) == "low_freq_factor" ? s.low_freq_factor : s.high_freq_factor) =
          number_field(*v, key, where);
    }
  }
  if (s.type == RopeType::Yarn) {
    s.beta_fast = optional_number(o, "beta_fast", where);
    s.beta_slow = optional_number(o, "beta_slow", where);
    s.attention_factor = optional_number(o, "attention_factor", where);
    s.mscale = optional_number(o, "mscale", where);
    s.mscale_all_dim = optional_number(o, "mscale_all_dim", where);
    if (const json* t = member(o, "truncate")) {
      LL_CHECK(t->is_boolean(), "{}: field \"truncate\" must be true or false, found {}", where,
               t->dump());
      s.truncate = t->get<bool>();
    }
  }
  validate_rope_scaling(s, where);
  return s;
}

json rope_scaling_to_json(const RopeScaling& s) {
  switch (s.type) {
    case RopeType::Default:
      return json(nullptr);
    case RopeType::Linear:
      return json{{"type", "linear"}, {"factor", s.factor}};
    case RopeType::Dynamic:
      return json{{"rope_type", "dynamic"}, {"factor", s.factor}};
    case RopeType::Llama3:
      return json{{"rope_type", "llama3"},
                  {"factor", s.factor},
                  {"original_max_position_embeddings", s.original_max_position_embeddings},
                  {"low_freq_factor", s.low_freq_factor},
                  {"high_freq_factor", s.high_freq_factor}};
    case RopeType::Yarn: {
      json o = {{"rope_type", "yarn"},
                {"factor", s.factor},
                {"original_max_position_embeddings", s.original_max_position_embeddings}};
      const std::pair<const char*, const std::optional<double>*> optional[] = {
          {"beta_fast", &s.beta_fast},
          {"beta_slow", &s.beta_slow},
          {"attention_factor", &s.attention_factor},
          {"mscale", &s.mscale},
          {"mscale_all_dim", &s.mscale_all_dim}};
      for (const auto& [key, value] : optional)
        if (*value) o[key] = **value;
      if (s.truncate) o["truncate"] = *s.truncate;
      return o;
    }
  }
  return json(nullptr);
}

}  // namespace ll
