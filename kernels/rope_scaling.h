#pragma once
// RoPE scaling types (transformers' modeling_rope_utils: default, linear, dynamic NTK, yarn,
// llama3) and the per-pair frequencies each gives, computed in fp32 the way transformers 5.24
// computes them on the CPU. docs/subsystems/rope-scaling.md has the formulas and the few places
// where we cannot be bit-identical to torch. C++17 (kernels/cuda/rope.cuh includes it in nvcc).
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace ll {

enum class RopeType { Default, Linear, Dynamic, Yarn, Llama3 };

// "default", "linear", "dynamic", "yarn", "llama3" (transformers' rope_type names).
const char* rope_type_name(RopeType type);
// The type of a name above; nullopt for anything else.
std::optional<RopeType> rope_type_from_name(std::string_view name);

// A config's rope_scaling / rope_parameters (without rope_theta, which LlamaConfig keeps).
// Optional fields are kept as given so that writing the object back reproduces it.
struct RopeScaling {
  RopeType type = RopeType::Default;
  double factor = 1.0;                           // every type but default; >= 1
  int64_t original_max_position_embeddings = 0;  // yarn, llama3: pretraining context (> 0)
  double low_freq_factor = 1.0;                  // llama3 (Llama-3.1: 1)
  double high_freq_factor = 4.0;                 // llama3 (Llama-3.1: 4); > low_freq_factor
  std::optional<double> beta_fast;               // yarn; unset (or 0): 32
  std::optional<double> beta_slow;               // yarn; unset (or 0): 1
  std::optional<double> attention_factor;        // yarn; unset: from factor, mscale(_all_dim)
  std::optional<double> mscale, mscale_all_dim;  // yarn
  std::optional<bool> truncate;                  // yarn; unset: true

  bool operator==(const RopeScaling& other) const;  // every field, optional ones as set
  bool operator!=(const RopeScaling& other) const { return !(*this == other); }
};

inline RopeScaling linear_rope_scaling(double factor) {
  RopeScaling s;
  s.type = factor == 1.0 ? RopeType::Default : RopeType::Linear;
  s.factor = factor;
  return s;
}

// What a forward pass applies: position p of pair j is rotated by p * inv_freq[j] (an fp32
// product), and cos/sin are multiplied by attention_scaling (fp32), as transformers does.
struct RopeFrequencies {
  std::vector<float> inv_freq;     // [hd/2]
  float attention_scaling = 1.0f;  // yarn's attention factor; 1 for the other types
};

// The frequencies transformers' rope init function gives for head_dim and theta (the config's
// rope_theta). max_position_embeddings and seq_len (the last position + 1 of the forward call)
// matter only for dynamic: seq_len <= max_position_embeddings gives the plain frequencies.
// Throws ll::Error for an invalid scaling (validate_rope_scaling) or odd head_dim.
RopeFrequencies rope_frequencies(const RopeScaling& scaling, double theta, int64_t head_dim,
                                 int64_t max_position_embeddings, int64_t seq_len);

// The two steps of rope_frequencies, apart so that tests can feed torch's own powers (torch's
// CPU pow is SLEEF's, which differs from a correctly rounded powf by one ulp in about one
// entry of five): the base the powers use (theta, or dynamic NTK's enlarged base, an fp32
// value above max_position_embeddings), base^(2j/hd) in fp32 [hd/2], and every step after them.
double rope_effective_base(const RopeScaling& scaling, double theta, int64_t head_dim,
                           int64_t max_position_embeddings, int64_t seq_len);
std::vector<float> rope_base_powers(double base, int64_t head_dim);
RopeFrequencies rope_frequencies_from_powers(const RopeScaling& scaling, double theta,
                                             int64_t head_dim, const std::vector<float>& powers);

// Throws ll::Error naming `where` and the field for a factor < 1 or not finite, a missing or
// non-positive original_max_position_embeddings (yarn, llama3), low_freq_factor >=
// high_freq_factor, beta_fast < beta_slow, a non-positive attention_factor.
void validate_rope_scaling(const RopeScaling& scaling, const std::string& where);

// The context a model with this scaling covers: max_position_embeddings for default; for linear
// and dynamic floor(max_position_embeddings * factor); for yarn and llama3 the larger of
// max_position_embeddings and floor(original_max_position_embeddings * factor).
int64_t rope_context_length(const RopeScaling& scaling, int64_t max_position_embeddings);

// One line for logs: "yarn (factor 4, original context 32768, attention factor 1.1386)".
std::string describe_rope_scaling(const RopeScaling& scaling);

// Reads a rope_scaling or rope_parameters object ({"type" or "rope_type": ..., fields}); every
// field is type-checked and the result validated, errors name `where` and the field.
// max_position_embeddings (0: not known) supplies transformers' defaults: yarn and llama3
// without original_max_position_embeddings use it (llama3 refuses instead: that is never what a
// Llama-3.x config means), yarn with "factor": null uses max / original. rope_theta and
// partial_rotary_factor 1 are accepted and ignored; other unknown keys are ignored, as
// transformers does (it only warns).
RopeScaling rope_scaling_from_json(const nlohmann::json& object, int64_t max_position_embeddings,
                                   const std::string& where);
// The object transformers 5 reads back to the same frequencies (null for default): linear as
// {"type": "linear", "factor": f} (what older transformers read too), the others with
// "rope_type" and every field that is set.
nlohmann::json rope_scaling_to_json(const RopeScaling& scaling);

}  // namespace ll
