#include "engine/train/sequence_source.h"

#include <utility>

#include <fmt/format.h>

#include "common/error.h"
#include "data/sft_dataset.h"
#include "data/sft_loader.h"
#include "data/tokenizer.h"
#include "data/tokenizer_path.h"

namespace ll {
namespace {

// Windows of -ctx tokens; every position but the last is labelled.
class WindowSource final : public SequenceSource {
 public:
  explicit WindowSource(WindowLoader loader) : loader_(std::move(loader)) {}
  void next(TrainingSequence& seq) override {
    seq.tokens = loader_.next();
    const int64_t n = int64_t(seq.tokens.size());
    seq.targets.resize(size_t(n));
    for (int64_t t = 0; t + 1 < n; ++t) seq.targets[size_t(t)] = seq.tokens[size_t(t + 1)];
    seq.targets[size_t(n - 1)] = -1;
    seq.labelled = n - 1;
  }
  LoaderPosition position() const override { return loader_.position(); }
  void seek(const LoaderPosition& position) override { loader_.seek(position); }
  const char* unit() const override { return "windows"; }
  int64_t per_epoch() const override { return loader_.windows_per_epoch(); }

 private:
  WindowLoader loader_;
};

// One SFT example per micro-batch (per-device batch 1, as the paper), at its own length: with
// causal attention and one sequence, right padding to a common length would change no logit
// and no loss, so there is none. S2-Attn segments are those of this one example (group size
// from its length), so they never cross example boundaries.
class SftSource final : public SequenceSource {
 public:
  explicit SftSource(SftLoader loader) : loader_(std::move(loader)) {}
  void next(TrainingSequence& seq) override {
    const SftExample& ex = loader_.next();
    seq.tokens = ex.tokens;
    seq.targets = sft_targets(ex);
    seq.labelled = ex.labelled();
  }
  LoaderPosition position() const override { return loader_.position(); }
  void seek(const LoaderPosition& position) override { loader_.seek(position); }
  const char* unit() const override { return "examples"; }
  int64_t per_epoch() const override { return loader_.examples_per_epoch(); }

 private:
  SftLoader loader_;
};

// --sft: reads and tokenizes the records, prints the warnings about truncated and skipped ones
// and returns the source with the setup's data line.
std::unique_ptr<SequenceSource> make_sft_source(const TrainOptions& o, const LlamaConfig& config,
                                                std::string& data_line, bool lead) {
  const std::string tokenizer_path = find_tokenizer(o.model, o.tokenizer);
  const Tokenizer tokenizer(tokenizer_path);
  LL_CHECK(tokenizer.vocab_size() <= config.vocab_size,
           "{}: the tokenizer has {} pieces but the model {} has vocab_size {}; pass the base "
           "model's own tokenizer (--tokenizer)",
           tokenizer_path, tokenizer.vocab_size(), o.model, config.vocab_size);
  const ChatTemplate chat = chat_template_for(o.chat_template, tokenizer);
  SftDataset dataset = build_sft_dataset(read_sft_records(o.sft), tokenizer, o.ctx, o.sft, chat);
  const SftDatasetSummary sum = summarize_sft_dataset(dataset);
  if (dataset.truncated > 0 && lead)
    fmt::print(stderr, "warning: {} of {} records are longer than -ctx {} and were truncated\n",
               dataset.truncated, dataset.records, o.ctx);
  if (dataset.skipped_truncated > 0 && lead)
    fmt::print(stderr,
               "warning: {} of {} records were skipped: their prompt alone fills -ctx {} "
               "tokens, so no answer token is left to train on\n",
               dataset.skipped_truncated, dataset.records, o.ctx);
  if (dataset.skipped_unlabelled > 0 && lead)
    fmt::print(stderr, "warning: {} of {} records were skipped: they have no answer token\n",
               dataset.skipped_unlabelled, dataset.records);
  std::vector<std::string> notes;
  if (dataset.skipped_truncated > 0)
    notes.push_back(
        fmt::format("{} skipped: prompt of -ctx tokens or more", dataset.skipped_truncated));
  if (dataset.skipped_unlabelled > 0)
    notes.push_back(fmt::format("{} skipped: no answer token", dataset.skipped_unlabelled));
  if (dataset.truncated > 0)
    notes.push_back(fmt::format("{} truncated to -ctx", dataset.truncated));
  std::string noted;
  for (const std::string& n : notes) noted += (noted.empty() ? " (" : "; ") + n;
  if (!noted.empty()) noted += ")";
  data_line = fmt::format(
      "sft {}: {} records{}, {} examples per epoch, {} tokens of which {} labelled, lengths "
      "min/median/max {}/{}/{}, tokenizer {}, chat template {}, shuffle {}",
      o.sft, dataset.records, noted, dataset.examples.size(), sum.tokens, sum.labelled_tokens,
      sum.min_len, sum.median_len, sum.max_len, tokenizer_path, chat_template_name(chat),
      o.shuffle);
  return std::make_unique<SftSource>(SftLoader(std::move(dataset), o.shuffle == "on", o.seed));
}

std::unique_ptr<SequenceSource> make_window_source(const TrainOptions& o, const LlamaConfig& config,
                                                   std::string& data_line) {
  WindowLoader loader(o.data, token_file_format_from_name(o.data_format), config.vocab_size, o.ctx,
                      o.shuffle == "on", o.seed);
  data_line = fmt::format("{} windows of {} tokens per epoch ({} tokens), shuffle {}",
                          loader.windows_per_epoch(), o.ctx, loader.total_tokens(), o.shuffle);
  return std::make_unique<WindowSource>(std::move(loader));
}

}  // namespace

std::unique_ptr<SequenceSource> make_sequence_source(const TrainOptions& o,
                                                     const LlamaConfig& config,
                                                     std::string& data_line, bool lead) {
  return o.sft.empty() ? make_window_source(o, config, data_line)
                       : make_sft_source(o, config, data_line, lead);
}

}  // namespace ll
