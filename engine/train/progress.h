#pragma once
// A live progress line on stderr: rewritten in place on a terminal, one line per update
// at most every few seconds otherwise (logs stay readable).
#include <chrono>
#include <cstdint>
#include <string>

namespace ll {

class ProgressLine {
 public:
  explicit ProgressLine(std::string label);
  // done of total units; `extra` is appended (e.g. "loss 2.31").
  void update(int64_t done, int64_t total, const std::string& extra = "");
  void finish();  // ends the line on a terminal

 private:
  std::string label_;
  bool tty_;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_print_;
  bool printed_ = false;
};

std::string format_duration(double seconds);  // "1h02m", "3m05s", "12.3s"

}  // namespace ll
