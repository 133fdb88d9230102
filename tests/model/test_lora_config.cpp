// LoRA settings: target lists, validation, and the --trainable words with their inverse.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>

#include "common/error.h"
#include "model/lora_config.h"

using ll::LoraConfig;
using ll::TrainableSet;

TEST_CASE("defaults are the paper's: r 8, alpha 16, q/k/v/o, scaling 2") {
  LoraConfig c;
  CHECK(c.rank == 8);
  CHECK(c.alpha == 16.0);
  CHECK(c.targets == std::vector<std::string>{"q_proj", "k_proj", "v_proj", "o_proj"});
  CHECK(c.scaling() == 2.0);
  CHECK_NOTHROW(c.validate());
  CHECK(c.targets_module("q_proj"));
  CHECK(c.targets_module("o_proj"));
  CHECK_FALSE(c.targets_module("gate_proj"));
  CHECK_FALSE(c.targets_module("q"));
  CHECK_FALSE(c.targets_module(""));
}

TEST_CASE("validate rejects bad rank, alpha and targets") {
  auto rejects = [](LoraConfig c, const char* fragment) {
    CAPTURE(fragment);
    CHECK_THROWS_WITH_AS(c.validate(), doctest::Contains(fragment), ll::Error);
  };
  LoraConfig c;
  c.rank = 0;
  rejects(c, "rank must be at least 1, got 0");
  c.rank = -3;
  rejects(c, "got -3");
  c = LoraConfig();
  c.alpha = 0;
  rejects(c, "alpha must be a positive number");
  c.alpha = -1;
  rejects(c, "alpha");
  c.alpha = std::nan("");
  rejects(c, "alpha");
  c.alpha = std::numeric_limits<double>::infinity();
  rejects(c, "alpha");
  c = LoraConfig();
  c.targets = {"q_proj", "lm_head"};
  rejects(c, "unknown LoRA target module \"lm_head\"");
  c.targets = {"q_proj", "v_proj", "q_proj"};
  rejects(c, "\"q_proj\" is listed twice");
  c.targets = {};
  rejects(c, "at least one target");
  c = LoraConfig();
  c.rank = 1;
  c.alpha = 0.5;
  c.targets = ll::lora_target_names();
  CHECK_NOTHROW(c.validate());
  CHECK(c.scaling() == 0.5);
}

TEST_CASE("parse_lora_targets: lists, blanks, all-linear") {
  using V = std::vector<std::string>;
  CHECK(ll::parse_lora_targets("q_proj") == V{"q_proj"});
  CHECK(ll::parse_lora_targets("q_proj,k_proj,v_proj,o_proj") ==
        V{"q_proj", "k_proj", "v_proj", "o_proj"});
  CHECK(ll::parse_lora_targets(" v_proj , gate_proj,down_proj ") ==
        V{"v_proj", "gate_proj", "down_proj"});
  CHECK(ll::parse_lora_targets("all-linear") == ll::lora_target_names());
  CHECK(ll::parse_lora_targets(" all-linear ") == ll::lora_target_names());
  CHECK(ll::lora_target_names().size() == 7);

  auto rejects = [](const std::string& list, const char* fragment) {
    CAPTURE(list);
    CHECK_THROWS_WITH_AS(ll::parse_lora_targets(list), doctest::Contains(fragment), ll::Error);
  };
  rejects("", "empty module name");
  rejects("q_proj,,k_proj", "empty module name");
  rejects("q_proj,", "empty module name");
  rejects("q_proj,lm_head", "unknown module \"lm_head\"");
  rejects("Q_PROJ", "unknown module");
  rejects("q_proj,q_proj", "listed twice");
  rejects("all-linear,q_proj", "cannot be combined");
  // The message lists the valid names, so the user can fix the flag.
  CHECK_THROWS_WITH_AS(ll::parse_lora_targets("qproj"), doctest::Contains("down_proj"), ll::Error);

  // What parse returns always validates.
  LoraConfig c;
  c.targets = ll::parse_lora_targets("up_proj,o_proj");
  CHECK_NOTHROW(c.validate());
}

TEST_CASE("parse_trainable and trainable_name are inverse over all sixteen sets") {
  auto same = [](const TrainableSet& a, const TrainableSet& b) {
    return a.embed_tokens == b.embed_tokens && a.norms == b.norms && a.bias == b.bias &&
           a.linear == b.linear;
  };
  const TrainableSet lora_plus = TrainableSet::lora_plus();
  CHECK(same(ll::parse_trainable("embed,norm"), lora_plus));
  CHECK(ll::trainable_name(lora_plus) == "embed,norm");
  CHECK(same(TrainableSet{}, TrainableSet::nothing()));
  CHECK(same(ll::parse_trainable("none"), TrainableSet::nothing()));
  CHECK(same(ll::parse_trainable("all"), TrainableSet::everything()));
  CHECK(same(ll::parse_trainable("norm, embed"), lora_plus));
  CHECK(same(ll::parse_trainable("embed"), TrainableSet{.embed_tokens = true}));
  CHECK(same(ll::parse_trainable("norm"), TrainableSet{.norms = true}));
  CHECK(same(ll::parse_trainable("bias"), TrainableSet{.bias = true}));
  CHECK(same(ll::parse_trainable("embed,norm,bias"),
             TrainableSet{.embed_tokens = true, .norms = true, .bias = true}));
  CHECK(same(ll::parse_trainable("embed,norm,bias,linear"), TrainableSet::everything()));
  CHECK(ll::trainable_name({}) == "none");
  CHECK(ll::trainable_name(TrainableSet::everything()) == "all");
  CHECK(ll::trainable_name({.norms = true, .linear = true}) == "norm,linear");
  CHECK(ll::trainable_name({.embed_tokens = true, .norms = true, .linear = true}) ==
        "embed,norm,linear");
  for (int bits = 0; bits < 16; ++bits) {
    const TrainableSet s{.embed_tokens = (bits & 1) != 0,
                         .norms = (bits & 2) != 0,
                         .bias = (bits & 4) != 0,
                         .linear = (bits & 8) != 0};
    const std::string name = ll::trainable_name(s);
    CAPTURE(name);
    CHECK(same(ll::parse_trainable(name), s));
  }

  auto rejects = [](const std::string& list, const char* fragment) {
    CAPTURE(list);
    CHECK_THROWS_WITH_AS(ll::parse_trainable(list), doctest::Contains(fragment), ll::Error);
  };
  rejects("", "empty word");
  rejects("embed,", "empty word");
  rejects("embeddings", "unknown word \"embeddings\"");
  rejects("embed,lm_head", "unknown word \"lm_head\"");
  rejects("embed,embed", "listed twice");
  rejects("none,embed", "cannot be combined");
  rejects("all,norm", "cannot be combined");
  rejects("ALL", "unknown word");
}
