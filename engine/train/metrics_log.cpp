#include "engine/train/metrics_log.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>

#include "common/atomic_file.h"
#include "common/error.h"

namespace ll {
namespace {

using ordered_json = nlohmann::ordered_json;

std::string dump_line(const ordered_json& j) {
  // NaN/Inf losses become null (JSON has no NaN); invalid UTF-8 in strings is replaced.
  return j.dump(-1, ' ', false, ordered_json::error_handler_t::replace) + "\n";
}

// The parsed object of one log line, or nothing for a line that is not a JSON object (the
// torn last line of a killed run).
std::optional<nlohmann::json> parse_line(const std::string& line) {
  nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return std::nullopt;
  return j;
}

// The "step" of a line that has an integer one.
std::optional<int64_t> line_step(const nlohmann::json& j) {
  auto it = j.find("step");
  if (it == j.end() || !it->is_number_integer()) return std::nullopt;
  return it->get<int64_t>();
}

double number_or_nan(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number()) return std::numeric_limits<double>::quiet_NaN();
  return it->get<double>();
}

int64_t integer_or_zero(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number()) return 0;
  return it->is_number_integer() ? it->get<int64_t>() : int64_t(it->get<double>());
}

}  // namespace

MetricsLog::MetricsLog(const std::string& path, int64_t resume_step) : path_(path) {
  if (resume_step >= 0 && std::filesystem::exists(path_)) {
    // Keep what describes the run up to the resumed step; drop later steps (they will be
    // redone) and torn lines. Rewritten atomically so a crash here loses nothing.
    std::ifstream in(path_);
    LL_CHECK(in.good(), "{}: cannot read the metrics log to resume it: {}", path_,
             std::strerror(errno));
    std::string kept, line;
    while (std::getline(in, line)) {
      const auto j = parse_line(line);
      if (!j) continue;
      const auto step = line_step(*j);
      if (step && *step > resume_step) continue;
      kept += line + "\n";
    }
    in.close();
    AtomicFileWriter rewrite(path_);
    rewrite.write(kept.data(), kept.size());
    rewrite.commit();
  }
  file_ = std::fopen(path_.c_str(), resume_step >= 0 ? "ab" : "wb");
  LL_CHECK(file_ != nullptr, "{}: cannot open the metrics log for writing: {}", path_,
           std::strerror(errno));
}

MetricsLog::~MetricsLog() {
  if (file_ != nullptr) std::fclose(file_);
}

namespace {

void write_line(std::FILE* file, const std::string& path, const std::string& line) {
  const bool ok =
      std::fwrite(line.data(), 1, line.size(), file) == line.size() && std::fflush(file) == 0;
  LL_CHECK(ok, "{}: cannot write the metrics log: {}", path, std::strerror(errno));
}

}  // namespace

void MetricsLog::log_step(const StepMetrics& m) {
  ordered_json j = {{"step", m.step},
                    {"loss", m.loss},
                    {"lr", m.lr},
                    {"grad_norm", m.grad_norm},
                    {"tokens_per_s", m.tokens_per_s},
                    {"tokens", m.tokens},
                    {"epoch", m.epoch},
                    {"elapsed_s", m.elapsed_s}};
  write_line(file_, path_, dump_line(j));
}

void MetricsLog::log_event(const std::string& name, const std::string& fields_json) {
  // Parsed, not pasted, so that a bad body cannot corrupt the log.
  ordered_json fields = ordered_json::object();
  if (!fields_json.empty()) {
    fields = ordered_json::parse("{" + fields_json + "}", nullptr, false);
    LL_CHECK(!fields.is_discarded(),
             "metrics log event \"{}\": fields are not a JSON object "
             "body: {}",
             name, fields_json);
  }
  ordered_json j = {{"event", name}};
  for (auto it = fields.begin(); it != fields.end(); ++it) {
    LL_CHECK(it.key() != "event", "metrics log event \"{}\": a field may not be named \"event\"",
             name);
    j[it.key()] = it.value();
  }
  write_line(file_, path_, dump_line(j));
}

std::vector<StepMetrics> MetricsLog::read_steps(const std::string& path) {
  std::ifstream in(path);
  LL_CHECK(in.good(), "{}: cannot read the metrics log: {}", path, std::strerror(errno));
  std::vector<StepMetrics> steps;
  std::string line;
  while (std::getline(in, line)) {
    const auto j = parse_line(line);
    if (!j || j->contains("event")) continue;
    const auto step = line_step(*j);
    if (!step) continue;
    StepMetrics m;
    m.step = *step;
    m.loss = number_or_nan(*j, "loss");  // null (a NaN when logged) reads back as NaN
    m.lr = number_or_nan(*j, "lr");
    m.grad_norm = number_or_nan(*j, "grad_norm");
    m.tokens_per_s = number_or_nan(*j, "tokens_per_s");
    m.tokens = integer_or_zero(*j, "tokens");
    m.epoch = integer_or_zero(*j, "epoch");
    m.elapsed_s = number_or_nan(*j, "elapsed_s");
    steps.push_back(m);
  }
  return steps;
}

// --- Loss curve ------------------------------------------------------------------------------

namespace {

std::string xml_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&apos;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

// Round tick positions covering [lo, hi] (Heckbert's "nice numbers"): steps of 1, 2 or 5
// times a power of ten, about `target` ticks. `integer` keeps the step >= 1 (step numbers).
struct Ticks {
  double lo, hi, step;
  int decimals;  // digits after the point that show the step exactly
  int count() const { return int(std::lround((hi - lo) / step)) + 1; }
  double at(int i) const { return lo + i * step; }
};

double nice_number(double x, bool round) {
  const double exponent = std::floor(std::log10(x));
  const double fraction = x / std::pow(10.0, exponent);
  double nice;
  if (round)
    nice = fraction < 1.5 ? 1 : fraction < 3 ? 2 : fraction < 7 ? 5 : 10;
  else
    nice = fraction <= 1 ? 1 : fraction <= 2 ? 2 : fraction <= 5 ? 5 : 10;
  return nice * std::pow(10.0, exponent);
}

Ticks nice_ticks(double lo, double hi, int target, bool integer) {
  if (!(hi > lo)) {
    // One value: a small window around it.
    const double pad = integer ? 1.0 : std::max(std::fabs(lo) * 0.1, 0.1);
    lo -= pad;
    hi += pad;
  }
  const double range = nice_number(hi - lo, false);
  double step = nice_number(range / (target - 1), true);
  if (integer) step = std::max(step, 1.0);
  Ticks t;
  t.step = step;
  t.lo = std::floor(lo / step) * step;
  t.hi = std::ceil(hi / step) * step;
  t.decimals = std::max(0, -int(std::floor(std::log10(step) + 1e-9)));
  return t;
}

std::string tick_label(double v, int decimals) {
  if (std::fabs(v) < 1e-12) v = 0;  // no "-0.0"
  return fmt::format("{:.{}f}", v, decimals);
}

// Exponential moving average with bias correction (as TensorBoard's smoothing, so the first
// points are not pulled toward 0), over finite values; non-finite points are skipped.
std::vector<double> smoothed(const std::vector<double>& y, double weight) {
  std::vector<double> out(y.size(), std::numeric_limits<double>::quiet_NaN());
  double ema = 0, norm = 0;
  for (size_t i = 0; i < y.size(); ++i) {
    if (!std::isfinite(y[i])) continue;
    ema = weight * ema + (1 - weight) * y[i];
    norm = weight * norm + (1 - weight);
    out[i] = ema / norm;
  }
  return out;
}

constexpr int kWidth = 800, kHeight = 480;
constexpr double kLeft = 80, kRight = 24, kTop = 48, kBottom = 56;

std::string svg_header(const std::string& title) {
  return fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" "
      "viewBox=\"0 0 {0} {1}\" font-family=\"sans-serif\" font-size=\"12\">\n"
      "<title>{2}</title>\n"
      "<rect width=\"{0}\" height=\"{1}\" fill=\"white\"/>\n"
      "<text x=\"{3}\" y=\"28\" text-anchor=\"middle\" font-size=\"16\" "
      "font-weight=\"bold\">{2}</text>\n",
      kWidth, kHeight, xml_escape(title), kWidth / 2);
}

// The loss points of the run: every step's (x, y), and the range of the finite ones.
struct LossPoints {
  std::vector<double> xs, ys;  // [steps] step, loss
  double x_min = 0, x_max = 0, y_min = 0, y_max = 0;
  size_t finite = 0;
};

LossPoints loss_points(const std::vector<StepMetrics>& steps) {
  LossPoints p;
  for (const StepMetrics& m : steps) {
    p.xs.push_back(double(m.step));
    p.ys.push_back(m.loss);
    if (!std::isfinite(m.loss)) continue;
    if (p.finite == 0) {
      p.x_min = p.x_max = double(m.step);
      p.y_min = p.y_max = m.loss;
    }
    p.x_min = std::min(p.x_min, double(m.step));
    p.x_max = std::max(p.x_max, double(m.step));
    p.y_min = std::min(p.y_min, m.loss);
    p.y_max = std::max(p.y_max, m.loss);
    ++p.finite;
  }
  return p;
}

// The plot area and its axes' ticks; px / py map a step / a loss to picture coordinates.
struct PlotArea {
  double plot_w = kWidth - kLeft - kRight, plot_h = kHeight - kTop - kBottom;
  Ticks tx{}, ty{};
  double px(double x) const { return kLeft + (x - tx.lo) / (tx.hi - tx.lo) * plot_w; }
  double py(double y) const { return kTop + (ty.hi - y) / (ty.hi - ty.lo) * plot_h; }
};

// Grid, ticks and tick labels, the frame and the axis labels.
std::string svg_axes(const PlotArea& a) {
  const Ticks &tx = a.tx, &ty = a.ty;
  const double plot_w = a.plot_w, plot_h = a.plot_h;
  std::string svg = "<g stroke=\"#e5e5e5\" stroke-width=\"1\">\n";
  for (int i = 0; i < tx.count(); ++i)
    svg += fmt::format("<line x1=\"{0:.1f}\" y1=\"{1}\" x2=\"{0:.1f}\" y2=\"{2}\"/>\n",
                       a.px(tx.at(i)), kTop, kTop + plot_h);
  for (int i = 0; i < ty.count(); ++i)
    svg += fmt::format("<line x1=\"{0}\" y1=\"{1:.1f}\" x2=\"{2}\" y2=\"{1:.1f}\"/>\n", kLeft,
                       a.py(ty.at(i)), kLeft + plot_w);
  svg += "</g>\n<g fill=\"#333\">\n";
  for (int i = 0; i < tx.count(); ++i)
    svg += fmt::format("<text x=\"{:.1f}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
                       a.px(tx.at(i)), kTop + plot_h + 18, tick_label(tx.at(i), tx.decimals));
  for (int i = 0; i < ty.count(); ++i)
    svg += fmt::format("<text x=\"{}\" y=\"{:.1f}\" text-anchor=\"end\">{}</text>\n", kLeft - 8,
                       a.py(ty.at(i)) + 4, tick_label(ty.at(i), ty.decimals));
  svg += "</g>\n";
  svg += fmt::format(
      "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#333\"/>\n", kLeft,
      kTop, plot_w, plot_h);
  // Axis labels.
  svg +=
      fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"13\">step</text>\n",
                  kLeft + plot_w / 2, kHeight - 14);
  svg += fmt::format(
      "<text x=\"20\" y=\"{0}\" text-anchor=\"middle\" font-size=\"13\" "
      "transform=\"rotate(-90 20 {0})\">loss</text>\n",
      kTop + plot_h / 2);
  return svg;
}

// Raw points: a light line, and dots while there are few enough to tell apart.
std::string svg_raw_points(const PlotArea& a, const LossPoints& p) {
  std::string raw;
  for (size_t i = 0; i < p.xs.size(); ++i)
    if (std::isfinite(p.ys[i]))
      raw += fmt::format("{}{:.1f},{:.1f}", raw.empty() ? "" : " ", a.px(p.xs[i]), a.py(p.ys[i]));
  std::string svg = fmt::format(
      "<polyline class=\"raw\" fill=\"none\" stroke=\"#9ecae1\" stroke-width=\"1\" "
      "points=\"{}\"/>\n",
      raw);
  if (p.finite <= 60) {
    svg += "<g class=\"raw-points\" fill=\"#6baed6\">\n";
    for (size_t i = 0; i < p.xs.size(); ++i)
      if (std::isfinite(p.ys[i]))
        svg += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"2.5\"/>\n", a.px(p.xs[i]),
                           a.py(p.ys[i]));
    svg += "</g>\n";
  }
  return svg;
}

// The smoothed line on top, and the legend that names its span.
std::string svg_smoothed_and_legend(const PlotArea& a, const LossPoints& p) {
  // EMA with a span of about a twentieth of the run (at least 2, so that it never just
  // repeats the raw line).
  const double span = std::max(2.0, std::round(double(p.finite) / 20.0));
  const double weight = 1.0 - 2.0 / (span + 1.0);
  const std::vector<double> ema = smoothed(p.ys, weight);
  std::string smooth;
  for (size_t i = 0; i < p.xs.size(); ++i)
    if (std::isfinite(ema[i]))
      smooth +=
          fmt::format("{}{:.1f},{:.1f}", smooth.empty() ? "" : " ", a.px(p.xs[i]), a.py(ema[i]));
  std::string svg = fmt::format(
      "<polyline class=\"smoothed\" fill=\"none\" stroke=\"#08519c\" stroke-width=\"2\" "
      "points=\"{}\"/>\n",
      smooth);
  const double lx = kLeft + a.plot_w - 222, ly = kTop + 12;
  svg += fmt::format(
      "<g font-size=\"11\">\n"
      "<rect x=\"{0}\" y=\"{1}\" width=\"210\" height=\"40\" fill=\"white\" "
      "fill-opacity=\"0.85\" stroke=\"#ccc\"/>\n"
      "<line x1=\"{2}\" y1=\"{3}\" x2=\"{4}\" y2=\"{3}\" stroke=\"#9ecae1\" "
      "stroke-width=\"1\"/>\n"
      "<text x=\"{5}\" y=\"{6}\">loss per step</text>\n"
      "<line x1=\"{2}\" y1=\"{7}\" x2=\"{4}\" y2=\"{7}\" stroke=\"#08519c\" "
      "stroke-width=\"2\"/>\n"
      "<text x=\"{5}\" y=\"{8}\">moving average (span {9:.0f})</text>\n"
      "</g>\n",
      lx, ly, lx + 8, ly + 13, lx + 32, lx + 40, ly + 17, ly + 29, ly + 33, span);
  return svg;
}

}  // namespace

void write_loss_curve_svg(const std::string& path, const std::vector<StepMetrics>& steps,
                          const std::string& title) {
  std::string svg = svg_header(title);
  const LossPoints points = loss_points(steps);
  PlotArea area;
  if (points.finite == 0) {
    svg += fmt::format(
        "<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#bbb\"/>\n"
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\" font-size=\"14\" fill=\"#666\">{}</text>\n",
        kLeft, kTop, area.plot_w, area.plot_h, kLeft + area.plot_w / 2, kTop + area.plot_h / 2,
        steps.empty() ? "no steps" : "no steps with a finite loss");
  } else {
    area.tx = nice_ticks(points.x_min, points.x_max, 8, /*integer=*/true);
    area.ty = nice_ticks(points.y_min, points.y_max, 6, /*integer=*/false);
    svg += svg_axes(area);
    svg += svg_raw_points(area, points);
    svg += svg_smoothed_and_legend(area, points);
    if (points.finite < steps.size())
      svg += fmt::format(
          "<text x=\"{}\" y=\"{}\" fill=\"#b00\">{} step(s) with a non-finite loss not "
          "drawn</text>\n",
          kLeft + 8, kTop + area.plot_h - 8, steps.size() - points.finite);
  }
  svg += "</svg>\n";

  AtomicFileWriter out(path);
  out.write(svg.data(), svg.size());
  out.commit();
}

}  // namespace ll
