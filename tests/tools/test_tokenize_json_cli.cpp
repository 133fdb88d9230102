// The tokenize tool with Hugging Face tokenizer.json models: BOS/EOS per family (Llama-3 adds
// <|begin_of_text|>, Qwen2.5 adds no BOS), tokenizer.json preferred over tokenizer.model, and
// uint32 shards when the vocabulary exceeds 65536 ids.
#include <doctest/doctest.h>
#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "data/token_file.h"
#include "data/tokenizer.h"
#include "tests/data/tokenizer_json_fixture.h"

using ll::test::contains;
using ll::test::read_file;
using ll::test::write_file;
namespace fs = std::filesystem;

namespace {

int run_tokenize(const std::string& args, const std::string& log) {
  const std::string cmd = std::string(LL_BINARY_DIR) + "/tokenize " + args + " > " + log + " 2>&1";
  const int status = std::system(cmd.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

std::string quoted(const std::string& s) { return "'" + s + "'"; }

const std::vector<std::string> kDocs{"In the beginning God created the heaven and the earth.\n",
                                     "Unicode: 中文 😀 <|im_end|> e\xcc\x81 123456"};

// What the tool must write: per document [BOS] + ids + EOS, as the tokenizer's family says.
std::vector<int32_t> expected_stream(const ll::Tokenizer& tok) {
  std::vector<int32_t> out;
  for (const std::string& d : kDocs) {
    if (tok.add_bos()) out.push_back(tok.bos_id());
    for (int id : tok.encode(d)) out.push_back(id);
    out.push_back(tok.eos_id());
  }
  return out;
}

std::vector<int32_t> shard_tokens(const std::string& path, int64_t vocab) {
  const auto tf = ll::TokenFile::open(path, ll::TokenFileFormat::Shard, vocab);
  return tf.read(0, tf.size());
}

struct Corpus {
  ll::test::ScratchDir dir{"tokenize_json_cli"};
  std::string inputs;
  Corpus() {
    write_file(dir.file("a.txt"), kDocs[0]);
    write_file(dir.file("b.txt"), kDocs[1]);
    inputs = quoted(dir.file("a.txt")) + " " + quoted(dir.file("b.txt"));
  }
  std::string log() const { return dir.file("log.txt"); }
};

}  // namespace

TEST_CASE("tokenize -m with a tokenizer.json: Llama-3 writes BOS + ids + EOS, Qwen2.5 ids + EOS") {
  Corpus c;
  for (const std::string name : {"llama3", "qwen2"}) {
    INFO(name);
    const std::string dir = ll::test::tokenizer_json_dir(name);
    const ll::Tokenizer tok(dir + "/tokenizer.json");
    const std::string out = c.dir.file(name + ".shard");
    REQUIRE_MESSAGE(
        run_tokenize("-m " + quoted(dir) + " -o " + quoted(out) + " " + c.inputs, c.log()) == 0,
        read_file(c.log()));
    const std::vector<int32_t> want = expected_stream(tok);
    CHECK(shard_tokens(out, tok.vocab_size()) == want);
    CHECK(fs::file_size(out) == 64 + 2 * want.size());  // 1016 ids: u16
    CHECK(want.front() ==
          (name == "llama3" ? *tok.token_id("<|begin_of_text|>") : tok.encode("In")[0]));
    CHECK(contains(read_file(c.log()), name == "llama3" ? "BOS + ids + EOS" : "ids + EOS"));
  }
}

TEST_CASE("tokenize prefers tokenizer.json over tokenizer.model in a model directory") {
  Corpus c;
  const std::string model = c.dir.file("model");
  fs::create_directories(model);
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"})
    fs::copy_file(ll::test::tokenizer_json_dir("llama3") + "/" + f, model + "/" + f);
  fs::copy_file(ll::test::fixture_tokenizer(), model + "/tokenizer.model");
  const std::string out = c.dir.file("out.shard");
  REQUIRE(run_tokenize("-m " + quoted(model) + " -o " + quoted(out) + " " + c.inputs, c.log()) ==
          0);
  const ll::Tokenizer tok(model + "/tokenizer.json");
  CHECK(shard_tokens(out, tok.vocab_size()) == expected_stream(tok));
  // --tokenizer overrides with either kind.
  REQUIRE(run_tokenize("-m " + quoted(model) + " --tokenizer " +
                           quoted(model + "/tokenizer.model") + " -o " + quoted(out) + " " +
                           c.inputs,
                       c.log()) == 2);  // -m and --tokenizer exclude each other (usage)
  REQUIRE(run_tokenize("--tokenizer " + quoted(model + "/tokenizer.model") + " -o " + quoted(out) +
                           " " + c.inputs,
                       c.log()) == 0);
  const ll::Tokenizer sp(model + "/tokenizer.model");
  CHECK(shard_tokens(out, sp.vocab_size()) == expected_stream(sp));
}

TEST_CASE("a vocabulary beyond 65536 ids gets a u32 shard; raw-u16 is refused") {
  Corpus c;
  // The Llama-3 fixture with one more special token at id 128255: 128256 ids, as Llama-3 has.
  nlohmann::json j =
      nlohmann::json::parse(read_file(ll::test::tokenizer_json_dir("llama3") + "/tokenizer.json"));
  j["added_tokens"].push_back({{"id", 128255},
                               {"content", "<|reserved_special_token_250|>"},
                               {"single_word", false},
                               {"lstrip", false},
                               {"rstrip", false},
                               {"normalized", false},
                               {"special", true}});
  const std::string model = c.dir.file("wide");
  write_file(model + "/tokenizer.json", j.dump());
  fs::copy_file(ll::test::tokenizer_json_dir("llama3") + "/tokenizer_config.json",
                model + "/tokenizer_config.json");
  const ll::Tokenizer tok(model + "/tokenizer.json");
  REQUIRE(tok.vocab_size() == 128256);
  const std::string out = c.dir.file("wide.shard");
  REQUIRE_MESSAGE(
      run_tokenize("-m " + quoted(model) + " -o " + quoted(out) + " " + c.inputs, c.log()) == 0,
      read_file(c.log()));
  const std::vector<int32_t> want = expected_stream(tok);
  CHECK(shard_tokens(out, tok.vocab_size()) == want);
  CHECK(fs::file_size(out) == 64 + 4 * want.size());
  CHECK(contains(read_file(c.log()), "u32 ids, vocabulary 128256"));

  CHECK(run_tokenize("-m " + quoted(model) + " --format raw-u16 -o " + quoted(c.dir.file("x.bin")) +
                         " " + c.inputs,
                     c.log()) == 1);
  CHECK(contains(read_file(c.log()), "128256"));
}

TEST_CASE("tokenize: a model directory with neither tokenizer names both") {
  Corpus c;
  CHECK(run_tokenize("-m " + quoted(c.dir.path().string()) + " -o " +
                         quoted(c.dir.file("n.shard")) + " " + c.inputs,
                     c.log()) == 1);
  const std::string log = read_file(c.log());
  CHECK(contains(log, "tokenizer.json"));
  CHECK(contains(log, "tokenizer.model"));
}
