// train_longlora: extend a Llama-2 model's context the LongLoRA way (S2-Attn, LoRA+ on the
// attention projections with trainable embeddings and norms, linear position interpolation),
// on token shards (--data) or supervised on instruction records (--sft).
#include <CLI/CLI.hpp>

#include "engine/tool_main.h"
#include "engine/train_options.h"
#include "engine/trainer.h"

namespace {

int run(int argc, char** argv) {
  ll::TrainOptions options;
  CLI::App app{
      "Fine-tune a Llama-2 model to a longer context with LongLoRA: shifted sparse attention\n"
      "(S2-Attn) in training, LoRA on the attention projections plus trainable embeddings and\n"
      "norms, and RoPE position interpolation by ceil(ctx / max_position_embeddings).\n"
      "Example: ./train_longlora -m llama2-7b.bin -ctx 8192 --data redpajama/ --steps 1000 "
      "--out out/\n"
      "Supervised fine-tuning (LongAlpaca): ./train_longlora -m llama2-7b-32k/ -ctx 32768 "
      "--sft LongAlpaca-12k.json --out out/sft\n"
      "  (tokenizer.model from the model directory or --tokenizer; loss on the answers only)"};
  ll::add_train_options(app, options);
  try {
    ll::parse_train_args(app, argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  ll::apply_train_config_file(app, options);
  ll::run_training(options);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return ll::run_tool("train_longlora", [&] { return run(argc, argv); });
}
