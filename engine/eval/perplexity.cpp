#include "engine/eval/perplexity.h"

#include <cmath>

#include "common/error.h"

namespace ll {

std::string ppl_protocol_name(PplProtocol p) {
  return p == PplProtocol::Paper ? "paper" : "non-overlapping";
}

PplProtocol ppl_protocol_from_name(const std::string& s) {
  if (s == "paper") return PplProtocol::Paper;
  if (s == "non-overlapping") return PplProtocol::NonOverlapping;
  fail("unknown perplexity protocol '{}': use 'paper' or 'non-overlapping'", s);
}

std::vector<PplWindow> ppl_windows(int64_t n_tokens, int64_t seq_len, int64_t stride,
                                   PplProtocol protocol) {
  LL_CHECK(seq_len >= 2, "--seq-len must be at least 2, got {}", seq_len);
  std::vector<PplWindow> windows;
  if (protocol == PplProtocol::Paper) {
    LL_CHECK(stride >= 1, "--stride must be at least 1, got {}", stride);
    for (int64_t start = 0; start < n_tokens - seq_len; start += stride)
      windows.push_back({start, seq_len});
    if (!windows.empty()) windows.pop_back();  // eval.py drops the last start
    LL_CHECK(!windows.empty(),
             "the data has {} tokens; the paper protocol at --seq-len {} with --stride {} needs "
             "more than {} tokens (or use a smaller --seq-len)",
             n_tokens, seq_len, stride, seq_len + stride);
  } else {
    for (int64_t start = 0; start + 1 < n_tokens; start += seq_len - 1)
      windows.push_back({start, std::min(seq_len, n_tokens - start)});
    LL_CHECK(!windows.empty(), "the data has {} tokens; at least 2 are needed", n_tokens);
  }
  return windows;
}

void PplAccumulator::add_window(const std::vector<float>& losses) {
  LL_CHECK(!losses.empty(), "a perplexity window scored no tokens");
  double sum = 0.0;
  for (float l : losses) sum += double(l);
  const double mean = sum / double(losses.size());
  LL_CHECK(std::isfinite(mean),
           "window {} has a non-finite loss ({}); the model weights or "
           "inputs are damaged",
           result_.windows, mean);
  result_.window_losses.push_back(mean);
  result_.windows += 1;
  result_.tokens_scored += int64_t(losses.size());
  total_loss_ += sum;
  sum_window_means_ += mean;
}

PplResult PplAccumulator::result() const {
  PplResult r = result_;
  if (r.windows == 0) return r;
  r.mean_loss = r.protocol == PplProtocol::Paper ? sum_window_means_ / double(r.windows)
                                                 : total_loss_ / double(r.tokens_scored);
  r.ppl = std::exp(r.mean_loss);
  return r;
}

PplResult evaluate_perplexity(LlamaModel& model, const TokenFile& data, PplProtocol protocol,
                              const std::vector<PplWindow>& windows, const ForwardSpec& spec,
                              const PplProgress& progress) {
  PplAccumulator acc(protocol);
  std::vector<int32_t> tokens;  // [window length]
  int64_t scored = 0;
  for (size_t w = 0; w < windows.size(); ++w) {
    tokens.resize(size_t(windows[w].length));
    data.read(windows[w].start, windows[w].length, tokens.data());
    acc.add_window(model.next_token_losses(tokens, spec));
    scored += windows[w].length - 1;  // not acc.result(): that copies every window's loss
    if (progress) progress(int64_t(w) + 1, int64_t(windows.size()), scored);
  }
  return acc.result();
}

}  // namespace ll
