// The tokenize tool end to end: runs the built binary on small inputs and checks the token
// files against the library's Tokenizer (BOS + encode(doc) + EOS per document).
#include <doctest/doctest.h>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>

#include "data/token_file.h"
#include "data/tokenizer.h"
#include "tests/data/scratch.h"

using ll::test::contains;
using ll::test::write_file;

namespace {

// Exit status of `tokenize ARGS`, output captured in `log`.
int run_tokenize(const std::string& args, const std::string& log) {
  const std::string cmd = std::string(LL_BINARY_DIR) + "/tokenize " + args + " > " + log + " 2>&1";
  const int status = std::system(cmd.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string quoted(const std::string& s) { return "'" + s + "'"; }

std::vector<int32_t> expected_stream(const std::vector<std::string>& docs) {
  const ll::Tokenizer tok(ll::test::fixture_tokenizer());
  std::vector<int32_t> out;
  for (const std::string& d : docs) {
    out.push_back(tok.bos_id());
    for (int id : tok.encode(d)) out.push_back(id);
    out.push_back(tok.eos_id());
  }
  return out;
}

std::vector<int32_t> all_tokens(const std::string& path, ll::TokenFileFormat format) {
  const auto tf = ll::TokenFile::open(path, format, 512);
  return tf.read(0, tf.size());
}

struct Corpus {
  ll::test::ScratchDir dir{"tokenize_cli"};
  std::vector<std::string> docs{"The GNU General Public License is a free, copyleft license.\n",
                                "first json document", "second: caf\xc3\xa9 \xe2\x9c\x93 42"};
  std::string inputs;
  Corpus() {
    write_file(dir.file("COPYING"), docs[0]);  // named files need no .txt
    write_file(dir.file("b.jsonl"),
               "{\"text\": \"first json document\", \"url\": \"x\"}\n\n"
               "{\"text\": \"second: caf\\u00e9 \xe2\x9c\x93 42\"}\n");
    inputs = quoted(dir.file("COPYING")) + " " + quoted(dir.file("b.jsonl"));
  }
  std::string log() const { return dir.file("log.txt"); }
};

}  // namespace

TEST_CASE("tokenize: text + .jsonl into one u16 shard equals BOS + encode + EOS per document") {
  Corpus c;
  const std::string out = c.dir.file("out/train.shard");  // parent directory is created
  REQUIRE_MESSAGE(run_tokenize("--tokenizer " + quoted(ll::test::fixture_tokenizer()) + " -o " +
                                   quoted(out) + " " + c.inputs,
                               c.log()) == 0,
                  ll::test::read_file(c.log()));
  const std::vector<int32_t> expected = expected_stream(c.docs);
  CHECK(all_tokens(out, ll::TokenFileFormat::Shard) == expected);
  CHECK(std::filesystem::file_size(out) == 64 + 2 * expected.size());
  const std::string log = ll::test::read_file(c.log());
  CHECK(contains(log, "3 documents"));
  CHECK(contains(log, std::to_string(expected.size()) + " tokens"));
  CHECK(contains(log, "tokens/s"));
}

TEST_CASE("tokenize: -m MODEL_DIR, --dtype u32, --format raw-u16 and --shard-tokens") {
  Corpus c;
  const std::vector<int32_t> expected = expected_stream(c.docs);
  const std::string model_dir = c.dir.file("model");
  std::filesystem::create_directories(model_dir);
  std::filesystem::copy_file(ll::test::fixture_tokenizer(), model_dir + "/tokenizer.model");

  SUBCASE("u32 shard via the model directory") {
    const std::string out = c.dir.file("wide.shard");
    REQUIRE(
        run_tokenize("-m " + quoted(model_dir) + " --dtype u32 -o " + quoted(out) + " " + c.inputs,
                     c.log()) == 0);
    CHECK(all_tokens(out, ll::TokenFileFormat::Shard) == expected);
    CHECK(std::filesystem::file_size(out) == 64 + 4 * expected.size());
  }
  SUBCASE("raw-u16 stream") {
    const std::string out = c.dir.file("eval.bin");
    REQUIRE(run_tokenize(
                "-m " + quoted(model_dir) + " --format raw-u16 -o " + quoted(out) + " " + c.inputs,
                c.log()) == 0);
    CHECK(all_tokens(out, ll::TokenFileFormat::RawU16) == expected);
    CHECK(std::filesystem::file_size(out) == 2 * expected.size());
  }
  SUBCASE("split into shards of N tokens") {
    const int64_t n = 7;
    REQUIRE(run_tokenize("-m " + quoted(model_dir) + " --shard-tokens " + std::to_string(n) +
                             " -o " + quoted(c.dir.file("split.shard")) + " " + c.inputs,
                         c.log()) == 0);
    std::vector<int32_t> joined;
    const size_t n_files = (expected.size() + size_t(n) - 1) / size_t(n);
    for (size_t i = 0; i < n_files; ++i) {
      const std::string path = c.dir.file(fmt::format("split.{:05}.shard", i));
      const std::vector<int32_t> part = all_tokens(path, ll::TokenFileFormat::Shard);
      CHECK(int64_t(part.size()) ==
            (i + 1 < n_files ? n : int64_t(expected.size()) - n * int64_t(i)));
      joined.insert(joined.end(), part.begin(), part.end());
    }
    CHECK_FALSE(std::filesystem::exists(c.dir.file(fmt::format("split.{:05}.shard", n_files))));
    CHECK_FALSE(std::filesystem::exists(c.dir.file("split.shard")));
    CHECK(joined == expected);
  }
}

TEST_CASE("tokenize: bad input exits with status 1 and an error naming the problem") {
  Corpus c;
  const std::string tok = "--tokenizer " + quoted(ll::test::fixture_tokenizer());
  const std::string out = c.dir.file("never.shard");

  SUBCASE("malformed jsonl line") {
    write_file(c.dir.file("bad.jsonl"), "{\"text\": \"ok\"}\n{\"text\": oops}\n");
    CHECK(run_tokenize(
              tok + " -o " + quoted(out) + " " + c.inputs + " " + quoted(c.dir.file("bad.jsonl")),
              c.log()) == 1);
    const std::string log = ll::test::read_file(c.log());
    CHECK(contains(log, "error: "));
    CHECK(contains(log, c.dir.file("bad.jsonl") + ":2"));
  }
  SUBCASE("missing tokenizer") {
    CHECK(run_tokenize("--tokenizer " + quoted(c.dir.file("none.model")) + " -o " + quoted(out) +
                           " " + c.inputs,
                       c.log()) == 1);
    CHECK(contains(ll::test::read_file(c.log()), "none.model"));
  }
  SUBCASE("model directory without tokenizer.model") {
    CHECK(
        run_tokenize("-m " + quoted(c.dir.path().string()) + " -o " + quoted(out) + " " + c.inputs,
                     c.log()) == 1);
    CHECK(contains(ll::test::read_file(c.log()), "tokenizer.model"));
  }
  SUBCASE("u32 ids cannot go into raw-u16") {
    CHECK(run_tokenize(tok + " --format raw-u16 --dtype u32 -o " + quoted(out) + " " + c.inputs,
                       c.log()) == 1);
  }
  CHECK_FALSE(std::filesystem::exists(out));
  // No temporary files left behind either.
  for (const auto& entry : std::filesystem::directory_iterator(c.dir.path())) {
    CHECK_FALSE(contains(entry.path().filename().string(), ".tmp."));
  }
}
