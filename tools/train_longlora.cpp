// train_longlora: extend a Llama-family model's context the LongLoRA way (S2-Attn, LoRA+ on the
// attention projections with trainable embeddings and norms, linear position interpolation),
// on token shards (--data) or supervised on instruction records (--sft).
// `mpirun -np W ./train_longlora ...` trains data-parallel over W ranks (CPU backend for now).
#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include <exception>
#include <new>
#include <string>

#include "common/tool_main.h"
#include "engine/parallel/communicator.h"
#include "engine/train/train_options.h"
#include "engine/train/trainer.h"

namespace {

int run(int argc, char** argv) {
  ll::TrainOptions options;
  CLI::App app{
      "Fine-tune a Llama-family model (Llama-2/3, Qwen2.5, Mistral) to a longer context with "
      "LongLoRA: shifted sparse attention\n"
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
  ll::dist::CommunicatorOptions comm_options;
  comm_options.timeout_s = options.dist_timeout;
  const std::unique_ptr<ll::dist::Communicator> communicator =
      ll::dist::make_communicator(comm_options);
  if (communicator->world_size() == 1) {
    ll::run_training(options, *communicator);
    return 0;
  }
  // Under mpirun an error on one rank must end every rank: the others would wait in a
  // collective (or in MPI_Finalize) for this one.
  std::string error;
  try {
    ll::run_training(options, *communicator);
    return 0;
  } catch (const std::bad_alloc&) {
    error = "out of memory";
  } catch (const std::exception& e) {
    error = e.what();
  }
  // Name the rank unless the message already does (collective failures do).
  if (error.rfind("rank ", 0) != 0) error = fmt::format("rank {}: {}", communicator->rank(), error);
  communicator->abort_world("train_longlora: error: " + error, 1);
  return 1;  // not reached: abort_world ends the process
}

}  // namespace

int main(int argc, char** argv) {
  return ll::run_tool("train_longlora", [&] { return run(argc, argv); });
}
