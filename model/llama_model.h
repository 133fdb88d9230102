#pragma once
// The Llama decoder, forward and backward, written once over the Backend interface: the CPU
// reference and the CUDA backend run this same schedule.
//
// Training (forward_backward) uses layer-wise recomputation: the forward keeps only each
// block's input [N, D] (L x N x D values in all, some of them in host memory with
// ForwardSpec::offloaded_layers); the backward re-runs one block's forward from its saved input,
// then runs that block's backward. Row-wise stages run over tiles (ForwardSpec::tile_tokens).
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "kernels/attention_pattern.h"
#include "kernels/backend.h"
#include "model/formats/adapter_io.h"
#include "model/key_value_exchange.h"
#include "model/llama_weights.h"
#include "model/lora_config.h"

namespace ll {

struct ForwardSpec {
  AttnMode attn_mode = AttnMode::Dense;  // S2 modes are for training; evaluation is dense
  int64_t group_size = 0;                // S2 group G (tokens); required for S2 modes
  RopeScaling rope;                      // the RoPE scaling applied (kernels/rope_scaling.h)
  int64_t position_offset = 0;           // position of the first token
  int64_t classifier_chunk = 2048;       // tokens per LM-head chunk (memory: chunk * V floats)
  // Rows per tile of the row-wise stages (norms, projections, MLP) in the forward, the
  // recomputation and the backward, so that [N, intermediate] never exists whole; 0 or >= N:
  // whole. Only what attention needs whole (q, k, v, its output, their gradients, the
  // log-sum-exp) is [N, ...]. Results do not depend on it except for the order of the sums
  // over tokens of parameter gradients (split at tile boundaries).
  int64_t tile_tokens = 0;
  // Training: the block inputs of layers [0, offloaded_layers) wait in host memory between the
  // forward and the backward (model/saved_block_inputs.h); at most num_hidden_layers - 1.
  int64_t offloaded_layers = 0;
  // Context parallelism: the call's tokens are one part of a window (Dense and S2 attention;
  // position_offset must be the part's first window position). Not owned.
  KeyValueExchange* context = nullptr;
};

// The frequencies a call over n_tokens tokens from spec.position_offset applies: spec.rope with
// the config's rope_theta, head_dim and max_position_embeddings; dynamic scaling sees seq_len =
// position_offset + n_tokens (the last position + 1), as transformers does in every forward,
// cached generation included (cached keys keep the rotation of the call that made them).
RopeFrequencies rope_frequencies_for(const LlamaConfig& config, const ForwardSpec& spec,
                                     int64_t n_tokens);

// What is added to and trained in the base model.
struct ModelSetup {
  std::optional<LoraConfig> lora;  // LoRA adapters (PEFT init: A Kaiming-uniform, B zero)
  TrainableSet trainable;          // base tensors trained (LoRA+: TrainableSet::lora_plus())
  uint64_t seed = 0;               // LoRA A initialisation
  bool training = false;           // allocate gradients and AdamW moments
  // With training: allocate the full AdamW moments per parameter. A data-parallel run keeps
  // them sharded in engine/parallel/sharded_optimizer.h instead and sets this to false.
  bool optimizer_moments = true;
};

// forward_backward's hook: the gradients of these trained parameters (indices into params())
// are final for this call. Called with the final norm and lm_head once the classifier's
// backward is done, with each layer's after its backward (last layer first), and with the
// embedding at the end; parameters of none of these groups are never reported. The
// data-parallel optimizer starts reducing each group while the backward goes on.
using GradientsReady = std::function<void(std::span<const int> params)>;

// A tensor the optimizer updates. `value` is what the forward reads (activation dtype; the
// master tensor itself when that is F32); master, grad, exp_avg, exp_avg_sq are F32.
struct TrainableParam {
  std::string name;  // PEFT key for LoRA matrices, HF name for base tensors
  std::vector<int64_t> shape;
  OwnedTensor value, master, grad, exp_avg, exp_avg_sq;
};

// Loss of one sequence: the sum of its labelled positions' cross-entropy and their count.
struct LossSum {
  double sum = 0.0;
  int64_t count = 0;
};

class LlamaModel {
 public:
  // Uploads the weights into backend memory (converted to its activation dtype) and creates
  // the adapters and training state `setup` asks for.
  LlamaModel(Backend& backend, const LlamaWeights& weights, const ModelSetup& setup = {});

  const LlamaConfig& config() const { return config_; }
  Backend& backend() const { return backend_; }
  const ModelSetup& setup() const { return setup_; }

  // Next-token cross-entropy of one sequence: out[t] = -log p(tokens[t+1] | tokens[0..t]),
  // N-1 values. The [N, V] logits never exist at once (see ForwardSpec::classifier_chunk).
  std::vector<float> next_token_losses(std::span<const int32_t> tokens, const ForwardSpec& spec);

  // Full logits [N, V], row-major. For short sequences (tests, generation).
  std::vector<float> logits(std::span<const int32_t> tokens, const ForwardSpec& spec);

  // Inference with a key/value cache (dense causal attention). K and V of every layer for up
  // to `capacity` tokens live in backend memory; `length` tokens are cached so far.
  struct KvCache {
    int64_t capacity = 0;
    int64_t length = 0;
    std::vector<OwnedTensor> k, v;  // per layer [capacity, Hkv*hd], K after RoPE
  };
  KvCache make_kv_cache(int64_t capacity);
  // Runs `tokens` at positions [cache.length, cache.length + n) (spec.rope applies;
  // spec.attn_mode must be Dense, spec.position_offset is ignored), appends their K/V to the
  // cache and returns fp32 logits: of the last token only [V], or of every token [n, V] with
  // all_logits. Throws ll::Error when the cache would overflow (names capacity and length).
  std::vector<float> forward_cached(std::span<const int32_t> tokens, KvCache& cache,
                                    const ForwardSpec& spec, bool all_logits = false);

  // Training: loss of `tokens` [N] against `targets` [N] (target < 0: no label) and the
  // gradients of loss_scale * (sum of labelled losses), ADDED to every trainable parameter's
  // grad (zero them with zero_grads() at the start of an optimizer step). Requires
  // setup.training. Throws ll::Error for a non-finite loss (before any gradients_ready call).
  LossSum forward_backward(std::span<const int32_t> tokens, std::span<const int32_t> targets,
                           const ForwardSpec& spec, float loss_scale,
                           const GradientsReady& gradients_ready = {});

  std::vector<TrainableParam>& params() { return params_; }
  const std::vector<TrainableParam>& params() const { return params_; }
  void zero_grads();

  // The trained tensors as host fp32 (master values): LoRA matrices under PEFT keys and base
  // tensors under HF names, with the setup's LoRA config.
  AdapterDir export_adapter(const std::string& base_model) const;
  // Loads an adapter's values into this model (LoRA config must match setup.lora: rank,
  // alpha and targets; every LoRA matrix of the setup must be present; trainable_params
  // overwrite the base tensors they name, trained or not). Throws ll::Error naming the key.
  void load_adapter(const AdapterDir& adapter);
  // Sets one trainable parameter's master (and value) from host fp32.
  void set_param(TrainableParam& param, const std::vector<float>& values);

 private:
  // A tensor the forward reads; `param` >= 0 when it is trained (index into params_).
  struct Weight {
    OwnedTensor value;
    int param = -1;
  };
  // A linear layer y = x W^T + b (+ scaling * (x A^T) B^T with LoRA; the bias is never part
  // of the adapter, as in PEFT).
  struct Linear {
    std::string module;  // "q_proj", ... (PEFT target name)
    Weight weight;       // [out, in]
    Weight bias;         // [out]; no value when the layer has none
    int lora_a = -1;     // params_ index of A [r, in], or -1
    int lora_b = -1;     // params_ index of B [out, r]
  };
  struct Layer {
    Weight input_layernorm, post_attention_layernorm;  // [D]
    Linear q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj;
  };
  // Whole-sequence tensors of one block (what attention needs whole), its per-tile
  // intermediates and their gradients: llama_block.cpp.
  struct AttentionTensors;
  struct AttentionGrads;
  struct TileWorkspace;
  struct TileGrads;

  Weight make_weight(const std::vector<float>& host, std::vector<int64_t> shape,
                     const std::string& name, bool trained);
  // `bias` [out] or empty (no bias).
  Linear make_linear(const std::vector<float>& host, const std::vector<float>& bias,
                     std::vector<int64_t> shape, int64_t layer, const std::string& module);
  int add_param(const std::string& name, std::vector<int64_t> shape,
                const std::vector<float>& initial);
  AttentionPattern make_mask(int64_t n_tokens, const ForwardSpec& spec) const;
  void check_spec(int64_t n_tokens, const ForwardSpec& spec) const;
  const Tensor& grad_of(const Weight& w) const;
  // The trained parameters of one layer (indices into params_), in params_ order.
  std::vector<int> layer_params(const Layer& layer) const;

  // out (+)= linear(x); u [N, r] receives x A^T when the layer has LoRA.
  void linear_forward(const Linear& lin, const Tensor& out, const Tensor& x, const Tensor& u,
                      bool accumulate);
  // dx (+)= d/dx; parameter gradients added. u is the forward's x A^T; du is scratch [N, r].
  void linear_backward(const Linear& lin, const Tensor& dx, const Tensor& dout, const Tensor& x,
                       const Tensor& u, const Tensor& du, bool accumulate);
  // x A^T of a LoRA layer into u [n, r] (nothing without LoRA): the recomputation of a
  // product linear_forward keeps.
  void lora_product(const Linear& lin, const Tensor& u, const Tensor& x);
  // [N, ...] (and with spec.context the key buffers of the part and what it receives).
  AttentionTensors make_attention_tensors(int64_t n_tokens, const ForwardSpec& spec);
  AttentionGrads make_attention_grads(int64_t n_tokens, const ForwardSpec& spec);
  TileWorkspace make_tile_workspace(int64_t tile_tokens);
  TileGrads make_tile_grads(int64_t tile_tokens);
  // One layer's slice of a KvCache for one forward_cached call: the new tokens' K/V go to
  // rows [past, past + n) and attention reads rows [0, past + n).
  struct KvSlot {
    const Tensor& k;  // [capacity, Hkv*hd]
    const Tensor& v;  // [capacity, Hkv*hd]
    int64_t past;
  };
  // One block, x_out [N, D] = block(x_in [N, D]); x_out may be x_in itself (in place). The
  // row-wise stages run over tiles of spec.tile_tokens rows; q, k, v, the attention output and
  // its log-sum-exp are left in `at` (the backward's recomputation needs them). With a cache
  // slot the attention is the cached dense one (inference); without, attention_forward under
  // `mask`.
  void block_forward(const Layer& layer, const Tensor& x_in, const Tensor& x_out,
                     AttentionTensors& at, TileWorkspace& tw, const AttentionPattern& mask,
                     const ForwardSpec& spec, const KvSlot* cache = nullptr);
  // The attention half of block_forward up to the attention output: q, k, v (tile by tile),
  // RoPE, attention (or the cached one).
  void attention_forward_part(const Layer& layer, const Tensor& x_in, AttentionTensors& at,
                              TileWorkspace& tw, const AttentionPattern& mask,
                              const ForwardSpec& spec, const KvSlot* cache);
  // One block's backward with its recomputation from the saved input x_in: dx [N, D] holds the
  // gradient at the block output on entry and at the block input on return; trained
  // parameters' gradients are added.
  void block_backward(const Layer& layer, const Tensor& x_in, AttentionTensors& at,
                      AttentionGrads& ag, TileWorkspace& tw, TileGrads& tg, const Tensor& dx,
                      const AttentionPattern& mask, const ForwardSpec& spec);
  // The final hidden state before the last norm, [N, D], for an inference forward: embedding
  // and every block in place on one residual buffer. cache (when non-null) receives the tokens'
  // K/V at rows [cache->length, +N) and is read by the attention (cache->length itself is not
  // advanced here).
  OwnedTensor run_blocks(const Tensor& token_ids, const ForwardSpec& spec,
                         const KvCache* cache = nullptr);
  // The last norm's output [N, D] (RoPE positions from spec.position_offset).
  OwnedTensor final_hidden(std::span<const int32_t> tokens, const ForwardSpec& spec,
                           const KvCache* cache = nullptr);

  Backend& backend_;
  LlamaConfig config_;
  ModelSetup setup_;
  std::vector<TrainableParam> params_;
  Weight embed_tokens_;  // [V, D]
  std::vector<Layer> layers_;
  Weight norm_;     // [D]
  Weight lm_head_;  // [V, D]; with tie_word_embeddings the embedding itself (one tensor)
  // Host memory for offloaded block inputs, [rows, D] each in the activation dtype: kept across
  // steps (pinning is slow) and grown when a step needs more layers or rows.
  std::vector<OwnedTensor> offload_host_;
};

}  // namespace ll
