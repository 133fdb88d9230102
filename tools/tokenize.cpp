// tokenize: text (text files, .jsonl files with a "text" field, directories of them) to token
// files. Each document becomes ids + EOS, after BOS when the family adds one (Llama-2/3 do,
// Qwen2.5 does not; ll::Tokenizer::add_bos), and the documents are
// concatenated into one stream: our shard format (data/shard_format.h) by default, or the
// paper's bare uint16 stream with --format raw-u16.
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/atomic_file.h"
#include "common/error.h"
#include "common/tool_main.h"
#include "data/shard_format.h"
#include "data/text_sources.h"
#include "data/tokenizer.h"
#include "data/tokenizer_path.h"
#include "engine/train/progress.h"

namespace fs = std::filesystem;

namespace {

struct Options {
  std::string tokenizer;
  std::string model_dir;
  std::string output;
  int64_t shard_tokens = 0;
  std::string dtype = "auto";
  std::string format = "shard";
  std::vector<std::string> inputs;
};

// Writes the token stream to one file, or to files of `shard_tokens` tokens each
// (out.shard -> out.00000.shard, out.00001.shard, ...; a document may continue into the next
// file, as readers concatenate them into one stream anyway).
class TokenOutput {
 public:
  TokenOutput(const Options& o, int64_t vocab_size)
      : o_(o), vocab_size_(vocab_size), raw_(o.format == "raw-u16") {
    bytes_per_token_ = o.dtype == "u32" ? 4 : o.dtype == "u16" ? 2 : 0;
    if (raw_) {
      LL_CHECK(bytes_per_token_ != 4, "--format raw-u16 stores uint16 ids; drop --dtype u32");
      LL_CHECK(vocab_size <= 65536,
               "the tokenizer has {} ids, too many for --format raw-u16 (uint16); use the "
               "default shard format",
               vocab_size);
    } else if (bytes_per_token_ == 0) {
      bytes_per_token_ = ll::shard_bytes_per_token_for_vocab(vocab_size);
    }
    LL_CHECK(o.shard_tokens >= 0, "--shard-tokens must be >= 0 (0: one file), got {}",
             o.shard_tokens);
  }

  void append(const std::vector<int>& ids) {
    size_t done = 0;
    while (done < ids.size()) {
      if (!open_) open_next();
      size_t n = ids.size() - done;
      if (o_.shard_tokens > 0) n = std::min<size_t>(n, size_t(o_.shard_tokens - in_file_));
      if (raw_) {
        // Ids were range-checked against the vocabulary (<= 65536) by the caller.
        buffer_.resize(n);
        for (size_t i = 0; i < n; ++i) buffer_[i] = uint16_t(ids[done + i]);
        raw_file_->write(buffer_.data(), n * 2);
      } else {
        shard_->append(ids.data() + done, n);
      }
      done += n;
      in_file_ += int64_t(n);
      total_ += int64_t(n);
      if (o_.shard_tokens > 0 && in_file_ == o_.shard_tokens) close_current();
    }
  }

  void finish() {
    if (open_) close_current();
  }

  int64_t total_tokens() const { return total_; }
  int bytes_per_token() const { return raw_ ? 2 : bytes_per_token_; }
  const std::vector<std::pair<std::string, int64_t>>& written() const { return written_; }

 private:
  std::string file_name(int64_t index) const {
    if (o_.shard_tokens == 0) return o_.output;
    const fs::path out(o_.output);
    std::string ext = out.extension().string();
    if (ext.empty()) ext = raw_ ? ".bin" : ".shard";
    return (out.parent_path() / fmt::format("{}.{:05}{}", out.stem().string(), index, ext))
        .string();
  }

  void open_next() {
    current_path_ = file_name(int64_t(written_.size()));
    if (raw_) {
      raw_file_ = std::make_unique<ll::AtomicFileWriter>(current_path_);
    } else {
      shard_.emplace(current_path_, vocab_size_, bytes_per_token_);
    }
    in_file_ = 0;
    open_ = true;
  }

  void close_current() {
    if (raw_) {
      raw_file_->commit();
      raw_file_.reset();
    } else {
      shard_->commit();
      shard_.reset();
    }
    written_.emplace_back(current_path_, in_file_);
    open_ = false;
  }

  const Options& o_;
  int64_t vocab_size_;
  bool raw_;
  int bytes_per_token_ = 0;
  bool open_ = false;
  std::string current_path_;
  int64_t in_file_ = 0;  // tokens in the open file
  int64_t total_ = 0;
  std::optional<ll::ShardWriter> shard_;
  std::unique_ptr<ll::AtomicFileWriter> raw_file_;
  std::vector<uint16_t> buffer_;                          // [n] one chunk of raw-u16 ids
  std::vector<std::pair<std::string, int64_t>> written_;  // (path, tokens)
};

int run(int argc, char** argv) {
  Options o;
  CLI::App app{
      "Tokenize text into a token file: each document becomes ids + EOS, after BOS when the\n"
      "family adds one (Llama: yes, Qwen2.5: no; from tokenizer_config.json).\n"
      "Inputs: text files (one document each), .jsonl files (one {\"text\": ...} object per\n"
      "line), directories (their .txt and .jsonl files, recursive, sorted).\n"
      "Example: ./tokenize -m llama2-7b-hf -o data/train.shard --shard-tokens 100000000 "
      "redpajama/"};
  auto* tok = app.add_option("--tokenizer", o.tokenizer,
                             "tokenizer.json (Hugging Face) or tokenizer.model (SentencePiece)");
  auto* model = app.add_option(
      "-m,--model", o.model_dir,
      "model directory (or our .bin); uses its tokenizer.json, else its tokenizer.model");
  tok->excludes(model);
  model->excludes(tok);
  app.add_option("-o,--output", o.output, "output file (out.shard; out.bin for raw-u16)")
      ->required();
  app.add_option("--shard-tokens", o.shard_tokens,
                 "split into files of N tokens: out.00000.shard, out.00001.shard, ... (0: one "
                 "file). A shard is built in memory (2 or 4 bytes a token), so split large "
                 "corpora")
      ->capture_default_str();
  app.add_option("--dtype", o.dtype,
                 "token width in a shard: auto (u16 when the vocabulary has <= 65536 ids, u32 "
                 "above: Llama-3, Qwen2.5), u16 or u32")
      ->capture_default_str()
      ->check(CLI::IsMember({"auto", "u16", "u32"}));
  app.add_option("--format", o.format,
                 "shard (ours: header with count and checksum) or raw-u16 (the paper's bare "
                 "little-endian uint16 stream)")
      ->capture_default_str()
      ->check(CLI::IsMember({"shard", "raw-u16"}));
  app.add_option("inputs", o.inputs, "text files, .jsonl files or directories")->required();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  LL_CHECK(!o.tokenizer.empty() || !o.model_dir.empty(),
           "no tokenizer: pass --tokenizer path/tokenizer.json (or tokenizer.model) or -m "
           "MODEL_DIR");

  const auto t0 = std::chrono::steady_clock::now();
  const ll::Tokenizer tokenizer(ll::find_tokenizer(o.model_dir, o.tokenizer));
  const int vocab = tokenizer.vocab_size();
  const bool add_bos = tokenizer.add_bos();
  const int bos = tokenizer.bos_id();
  const int eos = tokenizer.eos_id();
  LL_CHECK(eos >= 0,
           "{}: the tokenizer names no EOS (eos_token in tokenizer_config.json, eos_token_id in "
           "config.json); documents are separated by it, pass the model's own tokenizer",
           tokenizer.path());

  ll::DocumentReader reader(o.inputs);
  const fs::path parent = fs::path(o.output).parent_path();
  if (!parent.empty()) fs::create_directories(parent);
  TokenOutput output(o, vocab);

  // Documents are read in batches and encoded in parallel (ll::Tokenizer::encode is
  // thread-safe), then appended in input order so the stream does not depend on threads.
  constexpr int64_t kBatchBytes = int64_t(32) << 20;
  constexpr size_t kBatchDocs = 16384;
  std::vector<ll::Document> batch;
  std::vector<std::vector<int>> encoded;
  ll::ProgressLine progress("tokenize (MiB)");
  const int64_t total_mib = std::max<int64_t>(reader.input_bytes_total() >> 20, 1);
  int64_t n_docs = 0;
  bool more = true;
  while (more) {
    batch.clear();
    int64_t batch_bytes = 0;
    ll::Document doc;
    while (batch_bytes < kBatchBytes && batch.size() < kBatchDocs && (more = reader.next(doc))) {
      batch_bytes += int64_t(doc.text.size());
      batch.push_back(std::move(doc));
    }
    encoded.resize(batch.size());
    const int64_t n_batch = int64_t(batch.size());
    // An exception must not leave an OpenMP region: keep the first document's, rethrow after.
    std::vector<std::exception_ptr> errors(batch.size());
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t i = 0; i < n_batch; ++i) {
      try {
        std::vector<int>& ids = encoded[size_t(i)];
        ids.clear();
        if (add_bos) ids.push_back(bos);
        const std::vector<int> body = tokenizer.encode(batch[size_t(i)].text);
        ids.insert(ids.end(), body.begin(), body.end());
        ids.push_back(eos);
      } catch (...) {
        errors[size_t(i)] = std::current_exception();
      }
    }
    for (size_t i = 0; i < errors.size(); ++i) {
      if (!errors[i]) continue;
      try {
        std::rethrow_exception(errors[i]);
      } catch (const std::exception& e) {
        ll::fail("{}: {}", batch[i].source, e.what());
      }
    }
    for (const auto& ids : encoded) output.append(ids);
    n_docs += n_batch;
    progress.update(std::min(reader.input_bytes() >> 20, total_mib), total_mib,
                    fmt::format("{} documents, {} tokens", n_docs, output.total_tokens()));
  }
  progress.finish();
  LL_CHECK(n_docs > 0, "the inputs hold no documents (only blank .jsonl lines?); nothing written");
  output.finish();

  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  for (const auto& [path, n] : output.written()) fmt::print("wrote {} ({} tokens)\n", path, n);
  fmt::print(
      "{} files, {} documents, {} tokens ({}, u{} ids, vocabulary {}, {}) in {:.2f} s: "
      "{:.0f} tokens/s, {:.1f} MB/s of text\n",
      reader.files().size(), n_docs, output.total_tokens(), o.format, 8 * output.bytes_per_token(),
      vocab, add_bos ? "BOS + ids + EOS" : "ids + EOS", seconds,
      double(output.total_tokens()) / seconds, double(reader.text_bytes()) / 1e6 / seconds);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return ll::run_tool("tokenize", [&] { return run(argc, argv); });
}
