// ./convert HF_DIR -o out.bin [--dtype bf16|f16|f32]
// Turns a Hugging Face Llama directory (or another .bin) into our single-file .bin format
// (model/formats/bin_format.h), streaming tensor by tensor: a 70B model needs no extra memory.
#include <CLI/CLI.hpp>
#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

#include <fmt/format.h>

#include "common/error.h"
#include "common/tool_main.h"
#include "model/formats/bin_format.h"
#include "model/formats/tensor_source.h"
#include "model/llama_weights.h"

namespace {

namespace fs = std::filesystem;

struct Options {
  std::string input;
  std::string output;
  std::string dtype;  // "" = keep the source dtype when uniform, else bf16
};

ll::DType dtype_from_option(const std::string& s) {
  if (s == "bf16") return ll::DType::BF16;
  if (s == "f16") return ll::DType::F16;
  return ll::DType::F32;
}

// 6738415616 -> "6.74 B"; small counts stay exact.
std::string human_count(int64_t n) {
  if (n >= 1000000000) return fmt::format("{:.2f} B", double(n) / 1e9);
  if (n >= 1000000) return fmt::format("{:.2f} M", double(n) / 1e6);
  return fmt::format("{}", n);
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

int convert(const Options& o) {
  LL_CHECK(!fs::is_directory(o.output), "{}: is a directory; -o takes the .bin file to write",
           o.output);
  auto files = ll::open_model_files(o.input);
  ll::check_llama_tensors(*files);

  // Tensors in HF order; a tied lm_head stays absent, rotary_emb.inv_freq buffers are dropped.
  std::vector<ll::TensorEntry> tensors;
  int64_t params = 0;
  for (const ll::LlamaTensorSpec& spec : ll::llama_tensor_specs(files->config)) {
    const ll::TensorEntry* t = files->tensors.find(spec.name);
    if (t == nullptr) continue;
    tensors.push_back(*t);
    params += t->numel();
  }
  const ll::DType dtype =
      o.dtype.empty() ? ll::llama_storage_dtype(*files) : dtype_from_option(o.dtype);
  ll::write_model_bin(o.output, files->config, dtype, tensors);

  const std::string tokenizer_note =
      ll::place_tokenizer_beside_bin(o.output, files->tokenizer_path);
  const ll::LlamaConfig& c = files->config;
  fmt::print("source     {}\n", o.input);
  fmt::print("model      {} layers, hidden {}, {} heads / {} kv, ffn {}, vocab {}\n",
             c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.num_key_value_heads,
             c.intermediate_size, c.vocab_size);
  fmt::print("wrote      {} ({} tensors, {} params, {} in {}, file {})\n", o.output, tensors.size(),
             human_count(params), human_bytes(double(params) * double(ll::dtype_size(dtype))),
             ll::dtype_name(dtype), human_bytes(double(fs::file_size(o.output))));
  fmt::print("tokenizer  {}\n", tokenizer_note);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"Convert a Hugging Face Llama model directory to a single .bin file"};
  app.add_option("input", o.input, "Hugging Face model directory (or a .bin to re-encode)")
      ->required();
  app.add_option("-o,--output", o.output, "the .bin file to write")->required();
  app.add_option("--dtype", o.dtype,
                 "storage dtype (default: the source's if all tensors share one, else bf16)")
      ->check(CLI::IsMember({"bf16", "f16", "f32"}));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  return ll::run_tool("convert", [&] { return convert(o); });
}
