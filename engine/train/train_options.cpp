#include "engine/train/train_options.h"

#include <fmt/format.h>
#include <yaml-cpp/yaml.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>
#include <string_view>
#include <type_traits>
#include <variant>

#include "common/byte_size.h"
#include "common/error.h"
#include "kernels/attention_kernel.h"
#include "kernels/attention_pattern.h"
#include "model/lora_config.h"

namespace ll {
namespace {

// One option: its long name (also its YAML and JSON key), its CLI11 name string, the field it
// sets, its help text and, for word-valued options, the accepted words. One table drives the
// command line, the config file and the JSON record, so the three cannot drift apart.
using FieldPtr =
    std::variant<std::string TrainOptions::*, std::vector<std::string> TrainOptions::*,
                 int64_t TrainOptions::*, int TrainOptions::*, uint64_t TrainOptions::*,
                 double TrainOptions::*, bool TrainOptions::*>;

struct Field {
  std::string key;
  std::string flags;
  FieldPtr member;
  std::string help;
  std::vector<std::string> choices;
};

const std::vector<Field>& fields() {
  using O = TrainOptions;
  // clang-format off
  static const std::vector<Field> table = {
      // Model and data
      {"model", "-m,--model", &O::model,
       "Hugging Face model directory or our .bin file (required)", {}},
      {"data", "--data", &O::data,
       "token shards or directories of shards, one or more (this or --sft is required)", {}},
      {"sft", "--sft", &O::sft,
       "supervised fine-tuning on this JSON file of {\"instruction\", \"input\", \"output\"} "
       "records (LongAlpaca-12k.json; JSON Lines too): chat format per --chat-template, loss on "
       "the answer and the end of turn only, one example per micro-batch at its own length (at "
       "most -ctx); instead of --data", {}},
      {"tokenizer", "--tokenizer", &O::tokenizer,
       "tokenizer.json or tokenizer.model for --sft (default: the model directory's, or the "
       "one beside the .bin; tokenizer.json first)",
       {}},
      {"chat-template", "--chat-template", &O::chat_template,
       "--sft chat format: llama2 (LongLoRA's [INST] prompt, BOS/EOS), llama3 (Llama-3-Instruct "
       "headers, <|eot_id|>), chatml (Qwen2.5 <|im_start|>/<|im_end|>); auto: llama3 for a "
       "tokenizer with <|start_header_id|>, chatml for one with <|im_start|>, else llama2",
       {"auto", "llama2", "llama3", "chatml"}},
      {"data-format", "--data-format", &O::data_format,
       "token file format: shard (ours, from ./tokenize) or raw-u16 (flat little-endian uint16)",
       {"shard", "raw-u16"}},
      {"shuffle", "--shuffle", &O::shuffle,
       "shuffle the training windows (with --sft: examples) every epoch",
       {"on", "off"}},
      // Context
      {"ctx", "--ctx", &O::ctx, "training context length N in tokens (required; -ctx works too)",
       {}},
      {"group-ratio", "--group-ratio", &O::group_ratio,
       "S2-Attn group size G = N * ratio, ratio in (0, 1]", {}},
      {"dry-run", "--dry-run", &O::dry_run,
       "print the memory plan (weights, trained state, activations, workspaces) for this model, "
       "context and device, then exit; needs only the model's config.json, no data", {}},
      {"full-attn", "--full-attn", &O::full_attn,
       "dense causal attention instead of S2-Attn (the full-attention baseline)", {}},
      {"attn-mode", "--attn-mode", &O::attn_mode,
       "s2 (official LongLoRA: segment boundaries) or s2-roll (the paper's pseudocode: rolls "
       "half the heads with wrap-around, which leaks; for comparison only)",
       {"s2", "s2-roll"}},
      {"rope-scaling", "--rope-scaling", &O::rope_scaling,
       "RoPE scaling that extends the context: linear (position interpolation), yarn or llama3; "
       "auto: the model's own type, linear for a model without scaling. A -ctx within the "
       "model's context keeps its scaling unchanged",
       {"auto", "linear", "yarn", "llama3"}},
      {"rope-factor", "--rope-factor", &O::rope_factor,
       "RoPE scaling factor (0: from -ctx: linear ceil(N / max_position_embeddings), yarn and "
       "llama3 N / the model's original context)", {}},
      // LoRA+
      {"lora-rank", "--lora-rank", &O::lora_rank,
       "LoRA rank r (0: no adapters, with --trainable all: full training)", {}},
      {"lora-alpha", "--lora-alpha", &O::lora_alpha, "LoRA alpha (adapter scale alpha / r)", {}},
      {"lora-targets", "--lora-targets", &O::lora_targets,
       "comma-separated linear layers that get adapters (q_proj, k_proj, v_proj, o_proj, "
       "gate_proj, up_proj, down_proj) or all-linear",
       {}},
      {"trainable", "--trainable", &O::trainable,
       "base tensors trained besides the adapters: embed,norm (LoRA+), any of embed, norm and "
       "bias (the q/k/v biases of Qwen2), none, or all (full fine-tuning)",
       {}},
      {"init-adapter", "--init-adapter", &O::init_adapter,
       "start from this adapter directory instead of freshly initialised LoRA weights", {}},
      // Optimisation
      {"steps", "--steps", &O::steps, "optimizer steps", {}},
      {"lr", "--lr", &O::lr, "peak learning rate", {}},
      {"warmup", "--warmup", &O::warmup, "linear warmup steps (from lr 0)", {}},
      {"schedule", "--schedule", &O::schedule, "learning rate after warmup",
       {"constant", "cosine"}},
      {"grad-accum", "--grad-accum", &O::grad_accum,
       "windows (with --sft: examples) per optimizer step (gradient accumulation)", {}},
      {"max-grad-norm", "--max-grad-norm", &O::max_grad_norm,
       "clip the global gradient norm to this (0: no clipping)", {}},
      {"weight-decay", "--weight-decay", &O::weight_decay, "AdamW weight decay", {}},
      {"adam-beta1", "--adam-beta1", &O::adam_beta1, "AdamW beta1", {}},
      {"adam-beta2", "--adam-beta2", &O::adam_beta2, "AdamW beta2", {}},
      {"adam-eps", "--adam-eps", &O::adam_eps, "AdamW epsilon", {}},
      {"seed", "--seed", &O::seed, "random seed (LoRA initialisation, data order)", {}},
      // Runtime
      {"device", "--device", &O::device,
       "backend: auto (cuda when a GPU is present, else cpu), cpu or cuda",
       {"auto", "cpu", "cuda"}},
      {"attention-kernel", "--attention-kernel", &O::attention_kernel, kAttentionKernelHelp,
       {"auto", "simt", "tc-sm80", "tc-sm90", "tc-sm90-atomic-dq"}},
      {"classifier-chunk", "--classifier-chunk", &O::classifier_chunk,
       "tokens per LM-head chunk (memory: chunk x vocab floats)", {}},
      {"offload-activations", "--offload-activations", &O::offload_activations,
       "keep the saved block inputs in pinned host memory between the forward and the backward "
       "(copied beside the compute, back one layer ahead): on (every layer's but the last), off, "
       "or auto: the least offload with which the memory plan fits the device",
       {"auto", "on", "off"}},
      {"tile-tokens", "--tile-tokens", &O::tile_tokens,
       "run the norms, projections and MLP over tiles of this many tokens, so that no "
       "[N, intermediate] tensor exists (1 to -ctx); auto: the largest tile with which the plan "
       "fits (whole tensors when they fit)",
       {}},
      {"device-memory", "--device-memory", &O::device_memory,
       "the device memory to plan for (e.g. 80GB; K/M/G/T are powers of 1024): with --dry-run "
       "the card the run is for, otherwise a cap below the device's free memory; auto offload "
       "and tiles must fit 95% of it",
       {}},
      {"host-memory", "--host-memory", &O::host_memory,
       "host memory offloaded activations may take (e.g. 512GB; default: MemAvailable, or no "
       "limit with --dry-run)",
       {}},
      {"dist-timeout", "--dist-timeout", &O::dist_timeout,
       "under mpirun: seconds a rank waits for the others in one collective before the run is "
       "declared broken (a rank died or hangs) and every rank exits", {}},
      {"world-size", "--world-size", &O::world_size,
       "with --dry-run: plan the per-rank memory of a data-parallel run of this many ranks "
       "(0: the ranks of this launch, 1 without mpirun)", {}},
      {"sharded-optimizer", "--sharded-optimizer", &O::sharded_optimizer,
       "run the data-parallel optimizer step (bucketed gradient reduction overlapped with the "
       "backward, sharded AdamW; NCCL on GPUs) even in a world of one; always on under mpirun "
       "with more than one rank", {}},
      // Output
      {"out", "--out", &O::out, "output directory (checkpoints, metrics log)", {}},
      {"resume", "--resume", &O::resume,
       "resume training: --resume alone takes the latest checkpoint in --out, --resume DIR "
       "that checkpoint (default: start fresh)",
       {}},
      {"save-every", "--save-every", &O::save_every,
       "optimizer steps between checkpoints (0: only at the end)", {}},
      {"keep-checkpoints", "--keep-checkpoints", &O::keep_checkpoints,
       "checkpoints kept in --out (older ones are deleted)", {}},
      {"log-every", "--log-every", &O::log_every, "optimizer steps between metrics lines", {}},
      {"config", "--config", &O::config,
       "YAML file of options: keys are the long flag names without dashes (\"lora-rank: 16\", "
       "\"data: [a.bin, b.bin]\"); flags given on the command line win",
       {}},
  };
  // clang-format on
  return table;
}

const Field* find_field(std::string_view key) {
  for (const Field& f : fields())
    if (f.key == key) return &f;
  return nullptr;
}

// --- Config file -----------------------------------------------------------------------------

int yaml_line(const YAML::Node& node) { return node.Mark().line + 1; }

template <typename T>
constexpr const char* type_description() {
  if constexpr (std::is_same_v<T, bool>)
    return "true or false";
  else if constexpr (std::is_same_v<T, double>)
    return "a number";
  else if constexpr (std::is_unsigned_v<T>)
    return "a non-negative integer";
  else
    return "an integer";
}

template <typename T>
T yaml_scalar(const std::string& file, const std::string& key, const YAML::Node& node) {
  if (!node.IsScalar())
    fail("{}:{}: \"{}\": expected {}, got a {}", file, yaml_line(node), key, type_description<T>(),
         node.IsSequence() ? "list" : "mapping");
  T value{};
  if (!YAML::convert<T>::decode(node, value))
    fail("{}:{}: \"{}\": expected {}, got \"{}\"", file, yaml_line(node), key,
         type_description<T>(), node.Scalar());
  return value;
}

std::string yaml_string(const std::string& file, const std::string& key, const YAML::Node& node) {
  if (!node.IsScalar())
    fail("{}:{}: \"{}\": expected a single value, got a {}", file, yaml_line(node), key,
         node.IsSequence() ? "list" : "mapping");
  return node.Scalar();
}

// Sets options.*member from `node`, or only checks the value when `assign` is false (the flag
// was given on the command line): a broken file is an error even where a flag overrides it.
void apply_yaml_value(const std::string& file, const Field& field, const YAML::Node& key_node,
                      const YAML::Node& node, TrainOptions& options, bool assign) {
  const std::string& key = field.key;
  if (node.IsNull()) {
    // "resume:" alone mirrors "--resume" alone.
    if (key == "resume") {
      if (assign) options.resume = "auto";
      return;
    }
    // A missing value's own mark points past the key's line; name the key's line instead.
    fail("{}:{}: \"{}\" has no value", file, yaml_line(key_node), key);
  }
  std::visit(
      [&](auto member) {
        using T = std::remove_reference_t<decltype(options.*member)>;
        T value{};
        if constexpr (std::is_same_v<T, std::string>) {
          value = yaml_string(file, key, node);
        } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
          if (node.IsSequence()) {
            for (const YAML::Node& item : node) {
              if (!item.IsScalar())
                fail("{}:{}: \"{}\": expected a list of file names, found a nested {}", file,
                     yaml_line(item), key, item.IsSequence() ? "list" : "mapping");
              value.push_back(item.Scalar());
            }
          } else {
            value.push_back(yaml_string(file, key, node));
          }
        } else {
          value = yaml_scalar<T>(file, key, node);
        }
        if (assign) options.*member = std::move(value);
      },
      field.member);
}

std::string unknown_key_hint(const std::string& key) {
  std::string dashed = key;
  while (!dashed.empty() && dashed.front() == '-') dashed.erase(dashed.begin());
  for (char& c : dashed)
    if (c == '_') c = '-';
  if (dashed != key && find_field(dashed) != nullptr)
    return fmt::format(" (did you mean \"{}\"?)", dashed);
  std::string known;
  for (const Field& f : fields()) {
    if (f.key == "config") continue;
    known += known.empty() ? f.key : ", " + f.key;
  }
  return fmt::format("; known keys: {}", known);
}

// --- Validation ------------------------------------------------------------------------------

std::string join(const std::vector<std::string>& words, const char* sep) {
  std::string out;
  for (const std::string& w : words) out += out.empty() ? w : sep + w;
  return out;
}

std::vector<std::string> split_commas(const std::string& list) {
  std::vector<std::string> items;
  size_t start = 0;
  while (true) {
    const size_t comma = list.find(',', start);
    items.push_back(
        list.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return items;
}

void check_finite(const char* name, double value) {
  LL_CHECK(std::isfinite(value), "--{} must be a finite number (got {})", name, value);
}

}  // namespace

// --- Command line ----------------------------------------------------------------------------

void add_train_options(CLI::App& app, TrainOptions& options) {
  for (const Field& f : fields()) {
    if (f.key == "resume") {
      // An optional value: "--resume" alone (an empty result) means "auto". A callback rather
      // than default_str("auto"), which the help would show as if it were the default.
      app.add_option_function<std::string>(
             f.flags,
             [&options](const std::string& dir) { options.resume = dir.empty() ? "auto" : dir; },
             f.help)
          ->expected(0, 1)
          ->type_name("[DIR]");
      continue;
    }
    CLI::Option* opt = std::visit(
        [&](auto member) -> CLI::Option* {
          using T = std::remove_reference_t<decltype(options.*member)>;
          if constexpr (std::is_same_v<T, bool>)
            return app.add_flag(f.flags, options.*member, f.help);
          else
            return app.add_option(f.flags, options.*member, f.help);
        },
        f.member);
    if (!f.choices.empty()) opt->check(CLI::IsMember(f.choices));
    // Defaults shown in the help, except where there is none to show.
    if (f.key != "full-attn" && f.key != "dry-run" && f.key != "data" && f.key != "sft" &&
        f.key != "tokenizer" && f.key != "ctx")
      opt->capture_default_str();
  }
}

std::vector<std::string> normalize_train_args(int argc, const char* const* argv) {
  std::vector<std::string> args;
  bool after_separator = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--") after_separator = true;
    // "-ctx" or "-ctx=8192": one dash, a name of two or more characters that is a long name.
    if (!after_separator && arg.size() > 2 && arg[0] == '-' && arg[1] != '-') {
      const size_t eq = arg.find('=');
      const std::string name = arg.substr(1, eq == std::string::npos ? eq : eq - 1);
      if (name.size() >= 2 && find_field(name) != nullptr) arg.insert(arg.begin(), '-');
    }
    args.push_back(std::move(arg));
  }
  return args;
}

void parse_train_args(CLI::App& app, int argc, const char* const* argv) {
  if (app.get_name().empty() && argc > 0) app.name(argv[0]);  // "Usage: ./train_longlora ..."
  std::vector<std::string> args = normalize_train_args(argc, argv);
  std::reverse(args.begin(), args.end());  // CLI11's vector form takes the arguments reversed
  app.parse(args);
}

// --- Config file -----------------------------------------------------------------------------

void apply_train_config_file(const CLI::App& app, TrainOptions& options) {
  if (options.config.empty()) return;
  const std::string file = options.config;
  YAML::Node root;
  {
    std::ifstream probe(file);
    LL_CHECK(probe.good(), "{}: cannot read the config file (--config): {}", file,
             std::strerror(errno));
    std::error_code ec;
    LL_CHECK(!std::filesystem::is_directory(file, ec),
             "{}: is a directory; --config takes a YAML file", file);
  }
  try {
    root = YAML::LoadFile(file);
  } catch (const YAML::ParserException& e) {
    fail("{}:{}:{}: malformed YAML: {}", file, e.mark.line + 1, e.mark.column + 1, e.msg);
  } catch (const YAML::Exception& e) {
    fail("{}: cannot read the config file: {}", file, e.what());
  }
  if (root.IsNull()) return;  // an empty file sets nothing
  LL_CHECK(root.IsMap(),
           "{}:{}: a config file is a mapping of option names to values (e.g. \"lora-rank: "
           "16\"), not a {}",
           file, yaml_line(root), root.IsSequence() ? "list" : "single value");

  std::set<std::string> seen;
  for (auto it = root.begin(); it != root.end(); ++it) {
    // Copies: yaml-cpp's iterator hands out a temporary proxy, so a reference would dangle.
    const YAML::Node key_node = it->first;
    const YAML::Node value_node = it->second;
    LL_CHECK(key_node.IsScalar(), "{}:{}: option names must be plain words, not a {}", file,
             yaml_line(key_node), key_node.IsSequence() ? "list" : "mapping");
    const std::string key = key_node.Scalar();
    LL_CHECK(key != "config",
             "{}:{}: \"config\" cannot be set inside a config file (one file per run; give "
             "--config on the command line)",
             file, yaml_line(key_node));
    const Field* field = find_field(key);
    LL_CHECK(field != nullptr, "{}:{}: unknown key \"{}\"{}", file, yaml_line(key_node), key,
             unknown_key_hint(key));
    LL_CHECK(seen.insert(key).second, "{}:{}: \"{}\" is given twice", file, yaml_line(key_node),
             key);
    const bool given_on_command_line = app.count("--" + key) > 0;
    apply_yaml_value(file, *field, key_node, value_node, options, !given_on_command_line);
  }
}

// --- Validation ------------------------------------------------------------------------------

namespace {

// The model, the data and the choices among fixed values.
void check_inputs(const TrainOptions& o) {
  LL_CHECK(!o.model.empty(),
           "--model is required: a Hugging Face model directory or our .bin file");
  LL_CHECK(o.data.empty() || o.sft.empty(),
           "--sft and --data are mutually exclusive: --data trains on token shards, --sft on "
           "instruction records; give one of them");
  LL_CHECK(o.dry_run || !o.data.empty() || !o.sft.empty(),
           "--data or --sft is required: token shards (or directories of them) to train on, or "
           "a JSON file of instruction records for supervised fine-tuning");
  for (const std::string& d : o.data) LL_CHECK(!d.empty(), "--data: an empty file name");
  LL_CHECK(o.tokenizer.empty() || o.data.empty(),
           "--tokenizer is for --sft (token shards are already tokenized); drop it or use --sft");
  LL_CHECK(o.chat_template == "auto" || o.data.empty(),
           "--chat-template is for --sft (token shards are already tokenized); drop it or use "
           "--sft");
  for (const Field& f : fields()) {
    if (f.choices.empty()) continue;
    const std::string& value = o.*std::get<std::string TrainOptions::*>(f.member);
    bool known = false;
    for (const std::string& c : f.choices) known = known || c == value;
    LL_CHECK(known, "--{} must be one of {} (got \"{}\")", f.key, join(f.choices, ", "), value);
  }
  LL_CHECK(o.device != "cpu" || o.attention_kernel == "auto",
           "--attention-kernel {} is a CUDA kernel family; the CPU backend (--device cpu) has "
           "one attention kernel: use --attention-kernel auto",
           o.attention_kernel);
}

// The context, S2-Attn group and position interpolation.
void check_context(const TrainOptions& o) {
  LL_CHECK(o.ctx >= 2,
           "--ctx must be at least 2 tokens (got {}); it sets the training context "
           "length and is required",
           o.ctx);
  S2GroupInput s2;  // the ratio always; the group it gives at --ctx where S2-Attn runs
  s2.ratio = o.group_ratio;
  if (!o.full_attn) s2.seq_len = o.ctx;
  check_s2_group(s2);
  check_finite("rope-factor", o.rope_factor);
  LL_CHECK(o.rope_factor == 0 || o.rope_factor >= 1,
           "--rope-factor must be >= 0 (got {}; 0 = from -ctx)", o.rope_factor);
}

// The adapters and the base tensors trained.
void check_lora(const TrainOptions& o) {
  LL_CHECK(o.lora_rank >= 0,
           "--lora-rank must be at least 1, or 0 for no adapters (full training) (got {})",
           o.lora_rank);
  LL_CHECK(o.lora_rank > 0 || o.trainable == "all",
           "--lora-rank 0 (no adapters) trains only the base tensors: use it with --trainable all");
  check_finite("lora-alpha", o.lora_alpha);
  LL_CHECK(o.lora_alpha > 0, "--lora-alpha must be > 0 (got {})", o.lora_alpha);
  if (o.lora_targets != "all-linear") {
    const std::vector<std::string>& known = lora_target_names();
    std::set<std::string> seen;
    for (const std::string& t : split_commas(o.lora_targets)) {
      LL_CHECK(std::find(known.begin(), known.end(), t) != known.end(),
               "--lora-targets: unknown layer \"{}\" in \"{}\"; accepted: {} (comma-separated) "
               "or all-linear",
               t, o.lora_targets, join(known, ", "));
      LL_CHECK(seen.insert(t).second, "--lora-targets: \"{}\" is listed twice", t);
    }
  }
  if (o.trainable != "none" && o.trainable != "all") {
    std::set<std::string> seen;
    for (const std::string& t : split_commas(o.trainable)) {
      LL_CHECK(t == "embed" || t == "norm" || t == "bias",
               "--trainable: unknown word \"{}\" in \"{}\"; accepted: embed,norm (LoRA+), any "
               "of embed, norm and bias, none, all",
               t, o.trainable);
      LL_CHECK(seen.insert(t).second, "--trainable: \"{}\" is listed twice", t);
    }
  }
}

// The optimizer and its schedule.
void check_optimizer(const TrainOptions& o) {
  LL_CHECK(o.steps >= 1, "--steps must be at least 1 (got {})", o.steps);
  check_finite("lr", o.lr);
  LL_CHECK(o.lr > 0, "--lr must be > 0 (got {})", o.lr);
  LL_CHECK(o.warmup >= 0, "--warmup must be >= 0 steps (got {})", o.warmup);
  LL_CHECK(o.grad_accum >= 1, "--grad-accum must be at least 1 (got {})", o.grad_accum);
  check_finite("max-grad-norm", o.max_grad_norm);
  LL_CHECK(o.max_grad_norm >= 0, "--max-grad-norm must be >= 0 (got {}; 0 disables clipping)",
           o.max_grad_norm);
  check_finite("weight-decay", o.weight_decay);
  LL_CHECK(o.weight_decay >= 0, "--weight-decay must be >= 0 (got {})", o.weight_decay);
  LL_CHECK(o.adam_beta1 >= 0 && o.adam_beta1 < 1, "--adam-beta1 must be in [0, 1) (got {})",
           o.adam_beta1);
  LL_CHECK(o.adam_beta2 >= 0 && o.adam_beta2 < 1, "--adam-beta2 must be in [0, 1) (got {})",
           o.adam_beta2);
  check_finite("adam-eps", o.adam_eps);
  LL_CHECK(o.adam_eps > 0, "--adam-eps must be > 0 (got {})", o.adam_eps);
}

// Memory, ranks, checkpoints and logging.
void check_run(const TrainOptions& o) {
  LL_CHECK(o.classifier_chunk >= 1, "--classifier-chunk must be at least 1 token (got {})",
           o.classifier_chunk);
  check_finite("dist-timeout", o.dist_timeout);
  LL_CHECK(o.dist_timeout > 0, "--dist-timeout must be a positive number of seconds (got {})",
           o.dist_timeout);
  LL_CHECK(o.world_size >= 0 && o.world_size <= 1000000,
           "--world-size must be between 0 (this launch's ranks) and 1000000 (got {})",
           o.world_size);
  LL_CHECK(!o.out.empty(), "--out must name a directory");
  LL_CHECK(o.save_every >= 0, "--save-every must be >= 0 (got {}; 0 = only at the end)",
           o.save_every);
  LL_CHECK(o.keep_checkpoints >= 1, "--keep-checkpoints must be at least 1 (got {})",
           o.keep_checkpoints);
  LL_CHECK(o.log_every >= 1, "--log-every must be at least 1 (got {})", o.log_every);
  (void)tile_tokens_of(o);
  if (!o.device_memory.empty()) (void)parse_byte_size(o.device_memory, "--device-memory");
  if (!o.host_memory.empty()) (void)parse_byte_size(o.host_memory, "--host-memory");
}

}  // namespace

int64_t tile_tokens_of(const TrainOptions& o) {
  if (o.tile_tokens == "auto") return 0;
  int64_t tile = 0;
  size_t used = 0;
  try {
    tile = std::stoll(o.tile_tokens, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  LL_CHECK(used > 0 && used == o.tile_tokens.size() && tile >= 1 && (o.ctx < 1 || tile <= o.ctx),
           "--tile-tokens must be auto or a number of tokens from 1 to -ctx ({}); got \"{}\" (-ctx "
           "itself runs whole tensors)",
           o.ctx, o.tile_tokens);
  return tile;
}

void validate_train_options(const TrainOptions& o) {
  check_inputs(o);
  check_context(o);
  check_lora(o);
  check_optimizer(o);
  check_run(o);
}

// --- JSON ------------------------------------------------------------------------------------

std::string train_options_json(const TrainOptions& options) {
  nlohmann::ordered_json j = nlohmann::ordered_json::object();
  for (const Field& f : fields())
    std::visit([&](auto member) { j[f.key] = options.*member; }, f.member);
  // Invalid UTF-8 in a path must not make the record unwritable.
  return j.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace);
}

}  // namespace ll
