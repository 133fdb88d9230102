#include "engine/train/progress.h"

#include <unistd.h>

#include <cstdio>

#include <fmt/format.h>

namespace ll {

ProgressLine::ProgressLine(std::string label)
    : label_(std::move(label)),
      tty_(::isatty(STDERR_FILENO) != 0),
      start_(std::chrono::steady_clock::now()),
      last_print_(start_) {}

std::string format_duration(double s) {
  if (s < 60) return fmt::format("{:.1f}s", s);
  const int64_t total = int64_t(s);
  if (total < 3600) return fmt::format("{}m{:02}s", total / 60, total % 60);
  return fmt::format("{}h{:02}m", total / 3600, (total % 3600) / 60);
}

void ProgressLine::update(int64_t done, int64_t total, const std::string& extra) {
  const auto now = std::chrono::steady_clock::now();
  const double since_print = std::chrono::duration<double>(now - last_print_).count();
  const bool last = done >= total;
  if (!tty_ && !last && since_print < 5.0) return;
  if (tty_ && !last && since_print < 0.1) return;
  last_print_ = now;
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const double eta = done > 0 ? elapsed / double(done) * double(total - done) : 0.0;
  std::string line =
      fmt::format("{} {}/{} ({:.0f}%) elapsed {} eta {}{}{}", label_, done, total,
                  total > 0 ? 100.0 * double(done) / double(total) : 100.0,
                  format_duration(elapsed), format_duration(eta), extra.empty() ? "" : "  ", extra);
  std::fprintf(stderr, tty_ ? "\r\033[K%s" : "%s\n", line.c_str());
  std::fflush(stderr);
  printed_ = true;
}

void ProgressLine::finish() {
  if (tty_ && printed_) std::fprintf(stderr, "\n");
  printed_ = false;
}

}  // namespace ll
