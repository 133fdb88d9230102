#pragma once
// The training metrics log: one JSON object per line (JSONL), appended and flushed per
// record so that a killed run keeps every line it logged. On resume the log is reopened and
// lines for steps after the resumed step are dropped, so the file always describes one run.
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace ll {

struct StepMetrics {
  int64_t step = 0;   // 1-based optimizer step
  double loss = 0.0;  // mean CE over the step's labelled tokens
  double lr = 0.0;
  double grad_norm = 0.0;  // before clipping
  double tokens_per_s = 0.0;
  int64_t tokens = 0;  // labelled tokens so far
  int64_t epoch = 0;
  double elapsed_s = 0.0;
};

class MetricsLog {
 public:
  // Opens <path>; when resume_step >= 0 keeps only the lines with step <= resume_step (and
  // non-step lines), else truncates. Throws ll::Error when the file cannot be written.
  MetricsLog(const std::string& path, int64_t resume_step);
  ~MetricsLog();
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;

  void log_step(const StepMetrics& m);
  // Any other event as {"event": name, ...fields}; fields_json is a JSON object's body,
  // e.g. "\"epoch\": 2" (may be empty).
  void log_event(const std::string& name, const std::string& fields_json);

  // Every step record in the file (after a resume: the kept ones and the new ones).
  static std::vector<StepMetrics> read_steps(const std::string& path);

 private:
  std::string path_;
  std::FILE* file_ = nullptr;
};

// A loss curve as a standalone SVG picture: loss against step (smoothed line over the raw
// points), axes with ticks, title. Written atomically. Fewer than 1 point writes a picture
// that says "no steps".
void write_loss_curve_svg(const std::string& path, const std::vector<StepMetrics>& steps,
                          const std::string& title);

}  // namespace ll
