#pragma once
// Where a training step's micro-batches come from: windows of -ctx tokens of the token shards
// (--data) or one SFT example each (--sft). The training loop is written once over
// SequenceSource; its position is what checkpoints save and resume seeks to.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "data/window_loader.h"
#include "engine/train/train_options.h"
#include "model/llama_config.h"

namespace ll {

// One micro-batch: a sequence and what each of its positions is trained to predict.
struct TrainingSequence {
  std::vector<int32_t> tokens;   // [N]
  std::vector<int32_t> targets;  // [N] next-token target, -1 = no label
  int64_t labelled = 0;          // targets >= 0
};

// Where micro-batches come from: windows of token shards (--data) or SFT examples (--sft). The
// training loop is written once over this; the position is what checkpoints save.
class SequenceSource {
 public:
  virtual ~SequenceSource() = default;
  virtual void next(TrainingSequence& seq) = 0;
  virtual LoaderPosition position() const = 0;
  virtual void seek(const LoaderPosition& position) = 0;
  virtual const char* unit() const = 0;   // what one micro-batch is: "windows", "examples"
  virtual int64_t per_epoch() const = 0;  // micro-batches in one pass over the data
};

// The source the options ask for (--sft or --data), read (and, for --sft, tokenized) now: bad
// data fails before the weights load. data_line gets the setup's description of the data; the
// warnings about truncated or skipped SFT records go to stderr where `lead` (rank 0).
std::unique_ptr<SequenceSource> make_sequence_source(const TrainOptions& options,
                                                     const LlamaConfig& config,
                                                     std::string& data_line, bool lead);

}  // namespace ll
