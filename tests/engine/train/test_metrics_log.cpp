// The JSONL metrics log (flushed per line, resume drops later steps) and the loss-curve SVG.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "common/error.h"
#include "engine/train/metrics_log.h"
#include "tests/test_paths.h"

namespace {

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(in, line)) lines.push_back(line);
  return lines;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

ll::StepMetrics step_metrics(int64_t step) {
  ll::StepMetrics m;
  m.step = step;
  m.loss = 3.0 / double(step) + 0.125;
  m.lr = 2e-5 * double(step);
  m.grad_norm = 0.5 + double(step);
  m.tokens_per_s = 1000.25 * double(step);
  m.tokens = 4096 * step;
  m.epoch = step / 3;
  m.elapsed_s = 1.5 * double(step);
  return m;
}

size_t count_of(const std::string& text, const std::string& part) {
  size_t n = 0;
  for (size_t at = text.find(part); at != std::string::npos; at = text.find(part, at + 1)) ++n;
  return n;
}

// The number of "x,y" pairs in the points attribute of the polyline with this class.
size_t polyline_points(const std::string& svg, const std::string& cls) {
  const size_t at = svg.find("<polyline class=\"" + cls + "\"");
  if (at == std::string::npos) return 0;
  const size_t start = svg.find("points=\"", at) + 8;
  const size_t end = svg.find('"', start);
  return count_of(svg.substr(start, end - start), ",");
}

}  // namespace

TEST_CASE("every record is on disk as soon as it is logged") {
  const std::string path = (ll::test::fresh_temp_dir("metrics_flush") / "metrics.jsonl").string();
  ll::MetricsLog log(path, -1);
  CHECK(read_lines(path).empty());
  log.log_event("start", "\"options\": {\"ctx\": 8192}, \"world\": 1");
  log.log_step(step_metrics(1));
  // Read while the log is still open: both lines are there.
  std::vector<std::string> lines = read_lines(path);
  REQUIRE(lines.size() == 2);
  const nlohmann::json start = nlohmann::json::parse(lines[0]);
  CHECK(start["event"] == "start");
  CHECK(start["options"]["ctx"] == 8192);
  CHECK(start["world"] == 1);
  const nlohmann::json s1 = nlohmann::json::parse(lines[1]);
  CHECK(s1["step"] == 1);
  CHECK(s1["loss"].get<double>() == 3.125);
  CHECK(s1["tokens"] == 4096);
  CHECK_FALSE(s1.contains("event"));

  log.log_step(step_metrics(2));
  log.log_event("epoch", "");
  lines = read_lines(path);
  REQUIRE(lines.size() == 4);
  CHECK(nlohmann::json::parse(lines[3]) == nlohmann::json{{"event", "epoch"}});

  // A body that is not JSON is refused and writes nothing.
  CHECK_THROWS_AS(log.log_event("bad", "\"x\": "), ll::Error);
  CHECK(read_lines(path).size() == 4);
}

TEST_CASE("a fresh log truncates; a resumed one keeps steps up to the resumed step") {
  const auto dir = ll::test::fresh_temp_dir("metrics_resume");
  const std::string path = (dir / "metrics.jsonl").string();
  {
    ll::MetricsLog log(path, -1);
    log.log_event("start", "\"run\": 1");
    for (int64_t s = 1; s <= 6; ++s) {
      log.log_step(step_metrics(s));
      if (s == 4) log.log_event("checkpoint", "\"step\": 4, \"dir\": \"out/ckpt_4\"");
    }
    log.log_event("checkpoint", "\"step\": 6");
  }
  // A killed run's torn last line.
  { std::ofstream(path, std::ios::app) << "{\"step\": 7, \"lo"; }

  {
    ll::MetricsLog log(path, 4);
    const std::vector<ll::StepMetrics> kept = ll::MetricsLog::read_steps(path);
    REQUIRE(kept.size() == 4);
    for (int64_t s = 1; s <= 4; ++s) CHECK(kept[size_t(s - 1)].step == s);
    const std::vector<std::string> lines = read_lines(path);
    REQUIRE(lines.size() == 6);  // start, steps 1-4, checkpoint at 4
    CHECK(nlohmann::json::parse(lines[0])["event"] == "start");
    CHECK(nlohmann::json::parse(lines[5])["event"] == "checkpoint");
    CHECK(nlohmann::json::parse(lines[5])["step"] == 4);

    log.log_step(step_metrics(5));
    const std::vector<ll::StepMetrics> steps = ll::MetricsLog::read_steps(path);
    REQUIRE(steps.size() == 5);
    CHECK(steps.back().step == 5);
  }

  // Resuming at step 0 keeps only the non-step lines; a fresh open truncates.
  {
    ll::MetricsLog log(path, 0);
    CHECK(ll::MetricsLog::read_steps(path).empty());
    CHECK(read_lines(path).size() == 1);
  }
  {
    ll::MetricsLog log(path, -1);
    CHECK(read_lines(path).empty());
  }
  // Resuming where no log exists yet starts one.
  const std::string other = (dir / "new.jsonl").string();
  {
    ll::MetricsLog log(other, 10);
    log.log_step(step_metrics(11));
  }
  CHECK(ll::MetricsLog::read_steps(other).size() == 1);
}

TEST_CASE("read_steps returns what log_step wrote") {
  const std::string path = (ll::test::fresh_temp_dir("metrics_roundtrip") / "m.jsonl").string();
  std::vector<ll::StepMetrics> written;
  {
    ll::MetricsLog log(path, -1);
    for (int64_t s = 1; s <= 5; ++s) {
      written.push_back(step_metrics(s));
      log.log_step(written.back());
      log.log_event("note", "\"step\": " + std::to_string(s));  // events are not steps
    }
    ll::StepMetrics diverged = step_metrics(6);
    diverged.loss = std::nan("");
    log.log_step(diverged);
  }
  const std::vector<ll::StepMetrics> read = ll::MetricsLog::read_steps(path);
  REQUIRE(read.size() == 6);
  for (size_t i = 0; i < written.size(); ++i) {
    CHECK(read[i].step == written[i].step);
    CHECK(read[i].loss == written[i].loss);  // shortest round-trip formatting: exact
    CHECK(read[i].lr == written[i].lr);
    CHECK(read[i].grad_norm == written[i].grad_norm);
    CHECK(read[i].tokens_per_s == written[i].tokens_per_s);
    CHECK(read[i].tokens == written[i].tokens);
    CHECK(read[i].epoch == written[i].epoch);
    CHECK(read[i].elapsed_s == written[i].elapsed_s);
  }
  CHECK(std::isnan(read[5].loss));  // logged as null, read back as NaN
  // Every line stays valid JSON even with a NaN loss.
  for (const std::string& line : read_lines(path)) CHECK(nlohmann::json::accept(line));

  CHECK_THROWS_AS(ll::MetricsLog::read_steps(path + ".missing"), ll::Error);
  const auto dir = ll::test::fresh_temp_dir("metrics_unwritable");
  CHECK_THROWS_AS(ll::MetricsLog((dir / "no" / "such" / "dir.jsonl").string(), -1), ll::Error);
}

TEST_CASE("the loss curve is a self-contained SVG with one point per step") {
  const auto dir = ll::test::fresh_temp_dir("metrics_svg");
  std::vector<ll::StepMetrics> steps;
  for (int64_t s = 1; s <= 137; ++s) {
    ll::StepMetrics m = step_metrics(s);
    m.loss = 2.0 + 8.0 / std::sqrt(double(s)) + 0.3 * std::sin(double(s));
    steps.push_back(m);
  }
  const std::string path = (dir / "loss.svg").string();
  ll::write_loss_curve_svg(path, steps, "LongLoRA 7B <100k> & friends");
  const std::string svg = read_text(path);
  CHECK(svg.rfind("<svg", 0) == 0);
  CHECK(svg.find("</svg>") != std::string::npos);
  CHECK(svg.find("xmlns=\"http://www.w3.org/2000/svg\"") != std::string::npos);
  CHECK(svg.find("LongLoRA 7B &lt;100k&gt; &amp; friends") != std::string::npos);  // escaped
  CHECK(svg.find("<100k>") == std::string::npos);
  CHECK(polyline_points(svg, "raw") == steps.size());
  CHECK(polyline_points(svg, "smoothed") == steps.size());
  CHECK(svg.find(">step</text>") != std::string::npos);
  CHECK(svg.find(">loss</text>") != std::string::npos);
  // Round tick labels: the step axis runs 0..140 in 20s, the loss axis in whole numbers.
  CHECK(svg.find(">140</text>") != std::string::npos);
  CHECK(svg.find(">20</text>") != std::string::npos);
  CHECK(svg.find(">10</text>") != std::string::npos);
  // Tags balance (a cheap well-formedness check): every element is self-closed or closed.
  CHECK(count_of(svg, "<g") == count_of(svg, "</g>"));
  CHECK(count_of(svg, "<text") == count_of(svg, "</text>"));
  CHECK(count_of(svg, "<") == 2 * count_of(svg, "</") + count_of(svg, "/>"));

  // No temporary file is left behind.
  size_t files = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator(dir)) ++files;
  CHECK(files == 1);
}

TEST_CASE("loss curves with one step, flat losses and a NaN still draw") {
  const auto dir = ll::test::fresh_temp_dir("metrics_svg_edges");
  const std::string path = (dir / "loss.svg").string();

  ll::write_loss_curve_svg(path, {step_metrics(5)}, "one");
  std::string svg = read_text(path);
  CHECK(polyline_points(svg, "raw") == 1);
  CHECK(svg.find("<circle") != std::string::npos);
  CHECK(svg.find("nan") == std::string::npos);

  std::vector<ll::StepMetrics> flat = {step_metrics(1), step_metrics(2), step_metrics(3)};
  for (auto& m : flat) m.loss = 2.5;
  flat.push_back(step_metrics(4));
  flat.back().loss = std::nan("");
  ll::write_loss_curve_svg(path, flat, "flat");
  svg = read_text(path);
  CHECK(polyline_points(svg, "raw") == 3);
  CHECK(svg.find("nan") == std::string::npos);
  CHECK(svg.find("inf") == std::string::npos);
  CHECK(svg.find("non-finite") != std::string::npos);
}

TEST_CASE("no steps: a picture that says so") {
  const std::string path = (ll::test::fresh_temp_dir("metrics_svg_empty") / "loss.svg").string();
  ll::write_loss_curve_svg(path, {}, "empty run");
  const std::string svg = read_text(path);
  CHECK(svg.rfind("<svg", 0) == 0);
  CHECK(svg.find("</svg>") != std::string::npos);
  CHECK(svg.find("empty run") != std::string::npos);
  CHECK(svg.find("no steps") != std::string::npos);
  CHECK(svg.find("<polyline") == std::string::npos);
}
