#pragma once
// Every option of train_longlora, its default, its command-line flag and its YAML key
// (--config run.yaml; keys are the long flag names without dashes, e.g. "lora-rank: 16";
// a flag given on the command line wins over the file).
#include <cstdint>
#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace ll {

struct TrainOptions {
  // Model and data
  std::string model;                  // -m, --model: HF directory or .bin (required)
  std::vector<std::string> data;      // --data: token shards / directories (or --sft)
  std::string sft;                    // --sft: JSON (Lines) instruction records (or --data)
  std::string tokenizer;              // --tokenizer: for --sft; default: next to the model
  std::string data_format = "shard";  // --data-format shard|raw-u16
  std::string shuffle = "on";         // --shuffle on|off
  // --chat-template auto|llama2|llama3|chatml (--sft; auto: from the tokenizer's family)
  std::string chat_template = "auto";
  // Context
  int64_t ctx = 0;                    // -ctx, --ctx: training length N (required)
  double group_ratio = 0.25;          // --group-ratio: S2 group G = N * ratio
  bool full_attn = false;             // --full-attn: dense causal attention instead of S2
  std::string attn_mode = "s2";       // --attn-mode s2|s2-roll (roll: paper pseudocode, leaks)
  std::string rope_scaling = "auto";  // --rope-scaling auto|linear|yarn|llama3 (training_rope)
  double rope_factor = 0.0;           // --rope-factor: 0 = from -ctx (training_rope)
  // LoRA+
  int64_t lora_rank = 8;                                     // --lora-rank
  double lora_alpha = 16.0;                                  // --lora-alpha
  std::string lora_targets = "q_proj,k_proj,v_proj,o_proj";  // --lora-targets
  std::string trainable = "embed,norm";                      // --trainable embed,norm|none|all
  std::string init_adapter;                                  // --init-adapter DIR
  // Optimisation
  int64_t steps = 1000;               // --steps: optimizer steps
  double lr = 2e-5;                   // --lr
  int64_t warmup = 20;                // --warmup: steps
  std::string schedule = "constant";  // --schedule constant|cosine
  int64_t grad_accum = 8;             // --grad-accum: windows / SFT examples per step
  double max_grad_norm = 1.0;         // --max-grad-norm (0 disables clipping)
  double weight_decay = 0.0;          // --weight-decay
  double adam_beta1 = 0.9;            // --adam-beta1
  double adam_beta2 = 0.95;           // --adam-beta2
  double adam_eps = 1e-8;             // --adam-eps
  uint64_t seed = 42;                 // --seed
  // Runtime
  std::string device = "auto";               // --device auto|cpu|cuda
  std::string attention_kernel = "auto";     // --attention-kernel (kernels/attention_kernel.h)
  int64_t classifier_chunk = 2048;           // --classifier-chunk: tokens per LM-head chunk
  std::string offload_activations = "auto";  // --offload-activations auto|on|off
  std::string tile_tokens = "auto";          // --tile-tokens auto|N (tile_tokens_of)
  std::string device_memory;    // --device-memory: the device's size to plan for ("80GB")
  std::string host_memory;      // --host-memory: host memory for offloaded activations
  double dist_timeout = 600.0;  // --dist-timeout: seconds a collective waits for the ranks
  int64_t world_size = 0;       // --world-size: ranks the --dry-run plan is for (0: this launch's)
  bool sharded_optimizer = false;  // --sharded-optimizer: the data-parallel step in a world of one
  // Output
  std::string out = "out";   // --out DIR
  std::string resume;        // --resume [DIR|auto]: "" = no resume
  int64_t save_every = 0;    // --save-every: steps between checkpoints (0 = end only)
  int keep_checkpoints = 2;  // --keep-checkpoints k
  int64_t log_every = 1;     // --log-every: steps between metrics lines
  std::string config;        // --config run.yaml
  bool dry_run = false;      // --dry-run: print the memory plan and exit
};

// Registers every option on `app` with its help text and default. --model, --data/--sft and
// --ctx are not marked required here (the config file may give them): validate_train_options
// checks them after apply_train_config_file.
void add_train_options(CLI::App& app, TrainOptions& options);

// The command-line arguments after argv[0], in order, with single-dash long names rewritten
// to the double-dash form CLI11 parses: "-ctx 8192" -> "--ctx 8192", "-ctx=8192" ->
// "--ctx=8192" (the LongLoRA README's spelling; CLI11 only takes one-letter "-x" names).
// Applies to every long name of TrainOptions; short flags ("-m", "-mx.bin"), any other
// argument and everything after a bare "--" are left alone. Tools call parse_train_args
// rather than app.parse(argc, argv) so that "-ctx" works.
std::vector<std::string> normalize_train_args(int argc, const char* const* argv);

// app.parse() of normalize_train_args(argc, argv). Throws what app.parse throws
// (CLI::ParseError, including CLI::CallForHelp for --help: pass it to app.exit()).
void parse_train_args(CLI::App& app, int argc, const char* const* argv);

// After app.parse(): if options.config is set, reads the YAML file and sets every key whose
// flag was not given on the command line (app.count(flag) == 0). Throws ll::Error naming the
// file, line and key for an unknown key, a value of the wrong type or a malformed file.
void apply_train_config_file(const CLI::App& app, TrainOptions& options);

// Range checks that need no model (ctx >= 2, steps >= 1, lr > 0, ratio in (0, 1], rank >= 1,
// known enum words, one of --data and --sft, ...); throws ll::Error naming the option.
void validate_train_options(const TrainOptions& options);

// --tile-tokens as a number: 0 for auto (the plan chooses), else the rows per tile.
int64_t tile_tokens_of(const TrainOptions& options);

// The resolved options as a JSON object (for the checkpoint and the metrics log).
std::string train_options_json(const TrainOptions& options);

}  // namespace ll
