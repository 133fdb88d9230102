// export_hf: base model + adapter (LoRA matrices and trained embeddings/norms) -> one merged
// model, as a Hugging Face directory (config.json with the training's rope_scaling,
// safetensors, tokenizer.model) and optionally as our .bin. The merged model needs no PEFT and
// no LongLoRA code to run; without the rope_scaling it would silently produce garbage past the
// base context, which is why the factor is required.
#include <CLI/CLI.hpp>
#include <cmath>
#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

#include <fmt/format.h>

#include "common/error.h"
#include "common/tool_main.h"
#include "model/formats/adapter_io.h"
#include "model/formats/bin_format.h"
#include "model/formats/hf_export.h"
#include "model/formats/tensor_source.h"
#include "model/llama_weights.h"
#include "model/lora_merge.h"
#include "model/position_interpolation.h"

namespace {

namespace fs = std::filesystem;

struct Options {
  std::string model;
  std::string lora;
  std::string out;
  std::string out_bin;
  std::string dtype;  // "" = the base's storage dtype (as ./convert)
  std::string max_shard_size = "5GB";
  double rope_factor = 0.0;
  bool rope_factor_given = false;  // else the factor comes from the adapter's longlora.json
  std::string tokenizer;
};

ll::DType dtype_from_option(const std::string& s) {
  if (s == "f32") return ll::DType::F32;
  if (s == "f16") return ll::DType::F16;
  return ll::DType::BF16;
}

std::string human_bytes(double b) {
  const char* units[] = {"B", "KB", "MB", "GB", "TB"};
  int u = 0;
  while (b >= 1000 && u < 4) {
    b /= 1000;
    ++u;
  }
  return fmt::format("{:.{}f} {}", b, u == 0 ? 0 : 2, units[u]);
}

// The RoPE scaling the adapter was trained with: --rope-factor, else longlora.json (any type),
// else an error. --rope-factor 1 is the base's own scaling (an adapter trained without context
// extension, e.g. on Llama-3.1's llama3 scaling); F > 1 is the base's type with factor F, linear
// for a base without scaling (LongLoRA's position interpolation).
ll::RopeScaling training_rope(const Options& o, const ll::AdapterDir& adapter,
                              const ll::LlamaConfig& base) {
  if (o.rope_factor_given) {
    LL_CHECK(std::isfinite(o.rope_factor) && o.rope_factor >= 1.0,
             "--rope-factor {} must be a finite number >= 1", o.rope_factor);
    const ll::RopeScaling given =
        o.rope_factor == 1.0 ? base.rope_scaling
                             : ll::rope_for_context(base.rope_scaling, base.max_position_embeddings,
                                                    1, std::nullopt, o.rope_factor)
                                   .rope;
    if (adapter.longlora && adapter.longlora->rope != given) {
      fmt::print(stderr, "note: --rope-factor {} ({}) overrides {} in {}/longlora.json\n",
                 o.rope_factor, ll::describe_rope_scaling(given),
                 ll::describe_rope_scaling(adapter.longlora->rope), o.lora);
    }
    return given;
  }
  LL_CHECK(adapter.longlora.has_value(),
           "{}: no longlora.json records the position interpolation factor this adapter was "
           "trained with (PEFT's own adapters lack it); pass --rope-factor F, the factor of the "
           "training run: ceil(training context / max_position_embeddings), e.g. 2 for an 8192 "
           "fine-tune of Llama-2 (4096). Without it the merged model would produce garbage "
           "beyond the base context",
           o.lora);
  return adapter.longlora->rope;
}

int run(const Options& o) {
  LL_CHECK(!o.out.empty() || !o.out_bin.empty(),
           "nothing to write: give --out DIR and/or "
           "--out-bin FILE.bin");
  const uint64_t max_shard = ll::parse_byte_size(o.max_shard_size);
  if (!o.out_bin.empty()) {
    LL_CHECK(!fs::is_directory(o.out_bin),
             "{}: is a directory; --out-bin takes the .bin file "
             "to write",
             o.out_bin);
  }

  // Never write over the inputs (an export replaces what looks like a previous export).
  std::error_code ec;
  for (const std::string& input : {o.model, o.lora}) {
    for (const std::string& output : {o.out, o.out_bin}) {
      LL_CHECK(output.empty() || !fs::exists(output) || !fs::equivalent(output, input, ec),
               "{} is the input {}; write the export somewhere new", output, input);
    }
  }

  auto files = ll::open_model_files(o.model);
  // The tokenizer is checked before the slow part; a Hugging Face directory must have one.
  const std::string tokenizer = o.tokenizer.empty() ? files->tokenizer_path : o.tokenizer;
  if (!o.out.empty()) {
    LL_CHECK(!tokenizer.empty(),
             "{}: no tokenizer.json or tokenizer.model next to the weights; pass "
             "--tokenizer PATH (the base model's tokenizer)",
             o.model);
  }
  if (!tokenizer.empty()) {
    LL_CHECK(fs::is_regular_file(tokenizer), "{}: missing tokenizer (no such file)", tokenizer);
  }
  // A Hugging Face base's config.json (its other fields are kept) and generation_config.json.
  const std::string base_config = files->config_path;
  std::string generation_config;
  if (!base_config.empty()) {
    const fs::path g = fs::path(base_config).parent_path() / "generation_config.json";
    if (fs::is_regular_file(g, ec)) generation_config = g.string();
  }
  const ll::AdapterDir adapter = ll::read_adapter_dir(o.lora);
  const ll::RopeScaling rope = training_rope(o, adapter, files->config);

  // The base's own dtype by default: an F32 or F16 base exported as BF16 would no longer give
  // the perplexity of base + adapter.
  const ll::DType dtype =
      o.dtype.empty() ? ll::llama_storage_dtype(*files) : dtype_from_option(o.dtype);
  ll::LlamaWeights weights = ll::load_llama_weights(*files);
  files.reset();  // unmap: the weights are on the heap now
  const bool was_tied = weights.config.tie_word_embeddings;
  try {
    ll::merge_adapter(weights, adapter);
  } catch (const ll::Error& e) {
    ll::fail("cannot merge {} into {}: {}", o.lora, o.model, e.what());
  }
  weights.config.rope_scaling = rope;

  const ll::LlamaConfig& c = weights.config;
  fmt::print(
      "base       {} ({} layers, hidden {}, {} heads / {} kv, vocab {}, "
      "max_position_embeddings {})\n",
      o.model, c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.num_key_value_heads,
      c.vocab_size, c.max_position_embeddings);
  fmt::print(
      "adapter    {} (LoRA r {} alpha {} on {}: {} matrices merged; {} trained base "
      "tensors replaced)\n",
      o.lora, adapter.lora.rank, adapter.lora.alpha, fmt::join(adapter.lora.targets, ","),
      adapter.lora_tensors.size(), adapter.trainable_params.size());
  fmt::print("positions  rope_scaling {} ({}{})\n", ll::describe_rope_scaling(rope),
             o.rope_factor_given ? "--rope-factor" : o.lora + "/longlora.json",
             adapter.longlora
                 ? fmt::format(", trained at {} tokens", adapter.longlora->context_length)
                 : std::string());
  if (was_tied && !c.tie_word_embeddings) {
    fmt::print("note       the adapter trained an lm_head of its own: written untied\n");
  }

  if (!o.out.empty()) {
    ll::HfExportOptions options;
    options.rope = rope;
    options.tokenizer_path = tokenizer;
    options.base_config_path = base_config;
    options.generation_config_path = generation_config;
    options.max_shard_bytes = max_shard;
    options.dtype = dtype;
    const ll::HfExportSummary s = ll::write_hf_model_dir(o.out, weights, options);
    fmt::print("wrote      {}/ ({} in {} safetensors file{}, {}): {}\n", o.out,
               human_bytes(double(s.weight_bytes)), s.shards, s.shards == 1 ? "" : "s",
               ll::dtype_name(dtype), fmt::join(s.files, ", "));
  }
  if (!o.out_bin.empty()) {
    std::vector<ll::TensorEntry> tensors;
    for (const ll::TensorEntry& t : ll::llama_weights_tensors(weights)) {
      if (t.name == "lm_head.weight" && c.tie_word_embeddings) continue;
      tensors.push_back(t);
    }
    ll::write_model_bin(o.out_bin, c, dtype, tensors);
    // open_model_bin finds the tokenizer next to the .bin; existing files are kept.
    const std::string note = ll::place_tokenizer_beside_bin(o.out_bin, tokenizer);
    fmt::print("wrote      {} ({}, {}); tokenizer {}\n", o.out_bin, ll::dtype_name(dtype),
               human_bytes(double(fs::file_size(o.out_bin))), note);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{
      "Merge a LoRA adapter (and its trained embeddings and norms) into its base model "
      "and export it as a Hugging Face directory and/or our .bin.\nExample: "
      "./export_hf -m llama2-7b.bin --lora out/7b-8k --out llama2-7b-longlora-8k"};
  app.add_option("-m,--model", o.model, "base model: Hugging Face directory or our .bin")
      ->required();
  app.add_option("--lora", o.lora, "adapter directory (train_longlora --out, or PEFT's)")
      ->required();
  app.add_option("--out", o.out, "Hugging Face directory to write (replaces a previous export)");
  app.add_option("--out-bin", o.out_bin, "also (or only) write the merged model as our .bin");
  app.add_option("--dtype", o.dtype,
                 "storage dtype of the exported weights (default: the base's when all its "
                 "tensors share one, else bf16)")
      ->check(CLI::IsMember({"bf16", "f16", "f32"}));
  app.add_option("--max-shard-size", o.max_shard_size,
                 "split model.safetensors into shards of at most this size (5GB, 500MB, 2GiB)")
      ->capture_default_str();
  app.add_option("--rope-factor", o.rope_factor,
                 "linear position interpolation factor the adapter was trained with (default: "
                 "from the adapter's longlora.json; required for adapters without one)");
  app.add_option("--tokenizer", o.tokenizer,
                 "tokenizer.json or tokenizer.model to copy (default: the one next to the base "
                 "model)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  o.rope_factor_given = app.count("--rope-factor") > 0;
  return ll::run_tool("export_hf", [&] { return run(o); });
}
