// find_tokenizer (and its former name find_tokenizer_model): tokenizer.json, then
// tokenizer.model, of a Hugging Face directory or beside a .bin, or the --tokenizer override; a
// missing one is an error naming where it was looked for.
#include <doctest/doctest.h>

#include "data/tokenizer_path.h"
#include "tests/data/scratch.h"

using ll::test::contains;
using ll::test::error_of;

namespace {
const std::string kFixtureDir = std::string(LL_SOURCE_DIR) + "/tests/fixtures/tiny_llama";
}

TEST_CASE("a Hugging Face directory's tokenizer.model is found inside it") {
  CHECK(ll::find_tokenizer_model(kFixtureDir, "") == kFixtureDir + "/tokenizer.model");
  CHECK(ll::find_tokenizer_model(kFixtureDir + "/", "") == kFixtureDir + "/tokenizer.model");
}

TEST_CASE("a .bin's tokenizer.model is found beside the file") {
  ll::test::ScratchDir dir("tokenizer_path_bin");
  ll::test::write_file(dir.file("model.bin"), "LLORABIN");
  ll::test::write_file(dir.file("tokenizer.model"), "x");
  CHECK(ll::find_tokenizer_model(dir.file("model.bin"), "") == dir.file("tokenizer.model"));
}

TEST_CASE("--tokenizer overrides the lookup, and must exist") {
  ll::test::ScratchDir dir("tokenizer_path_override");
  ll::test::write_file(dir.file("model.bin"), "LLORABIN");  // nothing beside it
  const std::string other = ll::test::fixture_tokenizer();
  CHECK(ll::find_tokenizer_model(dir.file("model.bin"), other) == other);
  CHECK(ll::find_tokenizer_model(kFixtureDir, other) == other);

  const std::string missing = dir.file("nope.model");
  const std::string msg = error_of([&] { ll::find_tokenizer_model(kFixtureDir, missing); });
  CHECK(contains(msg, missing));
  CHECK(contains(msg, "--tokenizer"));
}

TEST_CASE("a missing tokenizer or model is an error naming the paths and the flag") {
  ll::test::ScratchDir dir("tokenizer_path_missing");
  ll::test::write_file(dir.file("hf/config.json"), "{}");
  std::string msg = error_of([&] { ll::find_tokenizer_model(dir.file("hf"), ""); });
  CHECK(contains(msg, dir.file("hf/tokenizer.model")));
  CHECK(contains(msg, "--tokenizer"));

  ll::test::write_file(dir.file("model.bin"), "LLORABIN");
  msg = error_of([&] { ll::find_tokenizer_model(dir.file("model.bin"), ""); });
  CHECK(contains(msg, dir.file("tokenizer.model")));
  CHECK(contains(msg, "--tokenizer"));

  msg = error_of([&] { ll::find_tokenizer_model(dir.file("absent.bin"), ""); });
  CHECK(contains(msg, dir.file("absent.bin")));
  CHECK(contains(msg, "no such model"));

  msg = error_of([&] { ll::find_tokenizer_model("", ""); });
  CHECK(contains(msg, "-m MODEL"));
}

TEST_CASE("tokenizer.json comes before tokenizer.model, in a directory and beside a .bin") {
  ll::test::ScratchDir dir("tokenizer_path_json");
  ll::test::write_file(dir.file("hf/tokenizer.model"), "x");
  ll::test::write_file(dir.file("hf/tokenizer.json"), "{}");
  CHECK(ll::find_tokenizer(dir.file("hf"), "") == dir.file("hf/tokenizer.json"));
  ll::test::write_file(dir.file("model.bin"), "LLORABIN");
  ll::test::write_file(dir.file("tokenizer.json"), "{}");
  CHECK(ll::find_tokenizer(dir.file("model.bin"), "") == dir.file("tokenizer.json"));
  // --tokenizer names either kind.
  CHECK(ll::find_tokenizer(dir.file("hf"), dir.file("hf/tokenizer.model")) ==
        dir.file("hf/tokenizer.model"));
  // Neither: both paths named.
  ll::test::write_file(dir.file("empty/config.json"), "{}");
  const std::string msg = error_of([&] { ll::find_tokenizer(dir.file("empty"), ""); });
  CHECK(contains(msg, dir.file("empty/tokenizer.json")));
  CHECK(contains(msg, dir.file("empty/tokenizer.model")));
}
