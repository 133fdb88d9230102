#pragma once
// Perplexity over a token stream, by one of two protocols (a result always says which):
//  - Paper (LongLoRA eval.py): windows of seq_len tokens start every `stride` tokens,
//    starts = range(0, n - seq_len, stride) with the last start dropped; a window's loss is
//    the mean next-token CE over its seq_len-1 predictions; ppl = exp(mean over windows).
//  - NonOverlapping: windows start at 0, seq_len-1, 2(seq_len-1), ... so every token after
//    the first is predicted exactly once (the last window may be shorter, >= 2 tokens);
//    ppl = exp(total CE / predictions).
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "data/token_file.h"
#include "model/llama_model.h"

namespace ll {

enum class PplProtocol { Paper, NonOverlapping };

std::string ppl_protocol_name(PplProtocol p);              // "paper" / "non-overlapping"
PplProtocol ppl_protocol_from_name(const std::string& s);  // throws on unknown names

struct PplWindow {
  int64_t start = 0;
  int64_t length = 0;
};

// The windows a protocol scores over a stream of n_tokens. Throws ll::Error (saying how
// many tokens are needed) when the stream is too short for even one window.
std::vector<PplWindow> ppl_windows(int64_t n_tokens, int64_t seq_len, int64_t stride,
                                   PplProtocol protocol);

struct PplResult {
  PplProtocol protocol = PplProtocol::Paper;
  double mean_loss = 0.0;
  double ppl = 0.0;
  int64_t windows = 0;
  int64_t tokens_scored = 0;
  std::vector<double> window_losses;  // mean CE of each window, in order
};

// Combines per-window sums into the protocol's result.
class PplAccumulator {
 public:
  explicit PplAccumulator(PplProtocol protocol) { result_.protocol = protocol; }
  void add_window(const std::vector<float>& losses);  // the window's per-prediction CE
  PplResult result() const;

 private:
  PplResult result_;
  double total_loss_ = 0.0;  // sum over all predictions (non-overlapping)
  double sum_window_means_ = 0.0;
};

// Progress after each window: (windows done, windows total, tokens scored so far).
using PplProgress = std::function<void(int64_t, int64_t, int64_t)>;

PplResult evaluate_perplexity(LlamaModel& model, const TokenFile& data, PplProtocol protocol,
                              const std::vector<PplWindow>& windows, const ForwardSpec& spec,
                              const PplProgress& progress = {});

}  // namespace ll
