// train_longlora --chat-template (the --sft chat format): flag and YAML key, its choices, and
// the refusal with --data.
#include <doctest/doctest.h>

#include <CLI/CLI.hpp>
#include <fstream>

#include "common/error.h"
#include "engine/train/train_options.h"
#include "tests/error_text.h"
#include "tests/test_paths.h"

namespace {

ll::TrainOptions parse(std::vector<std::string> args) {
  CLI::App app{"test"};
  ll::TrainOptions o;
  ll::add_train_options(app, o);
  args.insert(args.begin(), "train_longlora");
  std::vector<const char*> argv;
  for (const std::string& a : args) argv.push_back(a.c_str());
  ll::parse_train_args(app, int(argv.size()), argv.data());
  ll::apply_train_config_file(app, o);
  return o;
}

}  // namespace

TEST_CASE("--chat-template: auto by default, each format by flag or YAML, refused with --data") {
  CHECK(parse({"-m", "m", "--sft", "r.json", "-ctx", "64"}).chat_template == "auto");
  for (const char* f : {"llama2", "llama3", "chatml"}) {
    const ll::TrainOptions o =
        parse({"-m", "m", "--sft", "r.json", "-ctx", "64", "--chat-template", f});
    CHECK(o.chat_template == f);
    CHECK_NOTHROW(ll::validate_train_options(o));
    CHECK(ll::test::contains(ll::train_options_json(o), f));
  }
  CHECK_THROWS_AS(parse({"-m", "m", "--sft", "r.json", "-ctx", "64", "--chat-template", "vicuna"}),
                  CLI::ParseError);

  const auto dir = ll::test::fresh_temp_dir("chat_template_yaml");
  const std::string yaml = (dir / "run.yaml").string();
  std::ofstream(yaml) << "model: m\nsft: r.json\nctx: 64\nchat-template: chatml\n";
  CHECK(parse({"--config", yaml}).chat_template == "chatml");

  ll::TrainOptions o = parse({"-m", "m", "--data", "a.shard", "-ctx", "64"});
  o.chat_template = "llama3";
  CHECK(ll::test::contains(ll::test::error_of([&] { ll::validate_train_options(o); }),
                           "--chat-template is for --sft"));
}
