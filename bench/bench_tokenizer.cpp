// bench_tokenizer: encode throughput (MB/s of text, one thread) of ll::Tokenizer on the King
// James Bible for each fixture tokenizer; bench/tokenizers_encode.py measures the Hugging Face
// `tokenizers` library on the same text and files.
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <memory>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "common/tool_main.h"
#include "data/tokenizer.h"

namespace {

std::string read_text(const std::string& path) {
  if (path.empty()) {  // the KJV as the fixtures use it
    std::unique_ptr<FILE, int (*)(FILE*)> p(popen("bible gen1:1-rev22:21 2>/dev/null", "r"),
                                            pclose);
    std::string text;
    char buf[1 << 16];
    size_t n = 0;
    while (p && (n = fread(buf, 1, sizeof(buf), p.get())) > 0) text.append(buf, n);
    LL_CHECK(!text.empty(), "no text: install bible-kjv (scripts/setup.sh) or pass --text FILE");
    return text;
  }
  std::ifstream in(path, std::ios::binary);
  LL_CHECK(in.good(), "{}: cannot read", path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

int run(int argc, char** argv) {
  std::vector<std::string> tokenizers = {
      "tests/fixtures/tokenizer_json/llama3/tokenizer.json",
      "tests/fixtures/tokenizer_json/qwen2/tokenizer.json",
      "tests/fixtures/tokenizer_json/llama2_legacy/tokenizer.json",
      "tests/fixtures/tokenizer_json/llama2_metaspace/tokenizer.json",
      "tests/fixtures/tokenizer/tokenizer.model"};
  std::string text_path;
  int repeats = 3;
  bool lines = false;
  CLI::App app{"Tokenizer encode throughput (one thread, best of N runs)"};
  app.add_flag("--lines", lines, "encode each line on its own (short texts) instead of one text");
  app.add_option("--tokenizers", tokenizers, "tokenizer.json / tokenizer.model files")
      ->capture_default_str();
  app.add_option("--text", text_path, "text file (default: the KJV Bible from `bible`)");
  app.add_option("--repeats", repeats, "timed runs per tokenizer (best reported)")
      ->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  const std::string text = read_text(text_path);
  std::vector<std::string_view> pieces;  // what one encode call gets
  if (lines) {
    for (size_t at = 0; at < text.size();) {
      const size_t nl = std::min(text.find('\n', at), text.size() - 1);
      pieces.push_back(std::string_view(text).substr(at, nl + 1 - at));
      at = nl + 1;
    }
  } else {
    pieces.push_back(text);
  }
  fmt::print("text: {} bytes in {} encode calls; one thread, best of {}\n", text.size(),
             pieces.size(), repeats);
  fmt::print("{:<62} {:>10} {:>9} {:>8}\n", "tokenizer", "ids", "seconds", "MB/s");
  for (const std::string& path : tokenizers) {
    const ll::Tokenizer tok(path);
    double best = 1e30;
    size_t n_ids = 0;
    for (int r = 0; r < std::max(repeats, 1); ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      n_ids = 0;
      for (std::string_view p : pieces) n_ids += tok.encode(p).size();
      best = std::min(best,
                      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    fmt::print("{:<62} {:>10} {:>9.3f} {:>8.2f}\n", path, n_ids, best,
               double(text.size()) / 1e6 / best);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return ll::run_tool("bench_tokenizer", [&] { return run(argc, argv); });
}
