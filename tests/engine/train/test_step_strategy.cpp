// The step strategies of engine/train/step_strategy.h are chosen as the trainer always chose
// its step: the data-parallel (sharded) step with several ranks or --sharded-optimizer, the
// local step otherwise; each shows what it is (setup line, backward hook) on the tiny model.
#include <doctest/doctest.h>

#include <memory>
#include <string>

#include "engine/parallel/communicator.h"
#include "engine/train/local_step.h"
#include "engine/train/sharded_step.h"
#include "engine/train/step_strategy.h"
#include "kernels/cpu/cpu_backend.h"
#include "model/formats/tensor_source.h"
#include "model/llama_model.h"
#include "model/llama_weights.h"
#include "tests/test_paths.h"

namespace {

TEST_CASE("the sharded step with several ranks or --sharded-optimizer, else the local one") {
  ll::TrainOptions o;
  CHECK_FALSE(ll::uses_sharded_step(o, 1));
  CHECK(ll::uses_sharded_step(o, 2));
  CHECK(ll::uses_sharded_step(o, 8));
  o.sharded_optimizer = true;
  CHECK(ll::uses_sharded_step(o, 1));
  CHECK(ll::uses_sharded_step(o, 2));
}

TEST_CASE("make_step_strategy builds the chosen step on a world of one") {
  const ll::LlamaWeights weights = ll::load_llama_weights(
      *ll::open_model_files(ll::test::source_path("tests/fixtures/tiny_llama")));
  ll::CpuBackend backend;
  ll::dist::SingleProcessCommunicator world;
  ll::TrainOptions o;
  ll::ModelSetup setup;
  setup.lora = ll::LoraConfig{};
  setup.training = true;

  SUBCASE("local") {
    setup.optimizer_moments = true;
    ll::LlamaModel model(backend, weights, setup);
    const auto step = ll::make_step_strategy(model, world, o, "fingerprint", nullptr);
    CHECK(dynamic_cast<ll::LocalStep*>(step.get()) != nullptr);
    CHECK(step->setup_line("windows").empty());
    CHECK_FALSE(step->last_backward_hook(1));
    CHECK(step->timing_summary().empty());
  }
  SUBCASE("sharded (--sharded-optimizer)") {
    o.sharded_optimizer = true;
    setup.optimizer_moments = false;
    ll::LlamaModel model(backend, weights, setup);
    const auto step = ll::make_step_strategy(model, world, o, "fingerprint", nullptr);
    CHECK(dynamic_cast<ll::ShardedStep*>(step.get()) != nullptr);
    const std::string line = step->setup_line("windows");
    INFO(line);
    CHECK(line.rfind("data parallel  1 rank (single process; collectives: ", 0) == 0);
    CHECK(line.find("8 windows per rank and step = 8 per step") != std::string::npos);
    CHECK(static_cast<bool>(step->last_backward_hook(1)));
  }
}

}  // namespace
