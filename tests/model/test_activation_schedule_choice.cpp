// The plan chooses (model/activation_schedule.h): the least offload and then the largest tile
// that fit the device and the host, fixed choices respected, and what would fit when nothing
// does.
#include <doctest/doctest.h>

#include "common/error.h"
#include "model/activation_schedule.h"

namespace {

using namespace ll;

MemoryPlanInput eight_layers(int64_t n) {
  LlamaConfig c;
  c.vocab_size = 512;
  c.hidden_size = 64;
  c.intermediate_size = 172;
  c.num_hidden_layers = 8;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 4;
  c.max_position_embeddings = 128;
  c.rms_norm_eps = 1e-5;
  MemoryPlanInput in;
  in.config = c;
  in.lora = LoraConfig{};
  in.seq_len = n;
  in.backend = backend_traits(BackendKind::Cuda);
  return in;
}

MemoryBudget device_of(int64_t bytes, int64_t host = -1) {
  MemoryBudget b;
  b.device_free = b.device_total = bytes;
  b.host_free = host;
  return b;
}

MemoryPlan plan_of(MemoryPlanInput in, int64_t offloaded, int64_t tile) {
  in.offloaded_layers = offloaded;
  in.tile_tokens = tile;
  return plan_training_memory(in);
}

}  // namespace

TEST_CASE("without a limit: no offload, whole tensors") {
  const MemoryPlanInput in = eight_layers(65536);
  const ScheduleChoice c = choose_activation_schedule(in, {}, MemoryBudget{});
  CHECK(c.fits);
  CHECK(c.plan.offloaded_layers == 0);
  CHECK(c.plan.tile_tokens == 65536);
  CHECK(c.plan.total() == plan_of(in, 0, 0).total());
}

TEST_CASE("auto: the least offload, then the largest tile, that fits 95% of the device") {
  const MemoryPlanInput in = eight_layers(65536);
  const int64_t whole = plan_of(in, 0, 0).total();
  // Exactly the whole plan in 95%: no tiles.
  ScheduleChoice c = choose_activation_schedule(in, {}, device_of(whole * 20 / 19 + 20));
  CHECK(c.fits);
  CHECK(c.plan.tile_tokens == 65536);
  // A byte less: the largest tile that fits, no offload.
  const int64_t t32k = plan_of(in, 0, 32768).total();
  c = choose_activation_schedule(in, {}, device_of(whole * 20 / 19 - 1));
  CHECK(c.fits);
  CHECK(c.plan.offloaded_layers == 0);
  CHECK(c.plan.tile_tokens == 32768);
  CHECK(c.plan.total() == t32k);
  // Below the smallest tile without offload: the least offload that fits, with its largest tile.
  const int64_t no_offload_min = plan_of(in, 0, 1024).total();
  c = choose_activation_schedule(in, {}, device_of(no_offload_min * 20 / 19 - 1));
  CHECK(c.fits);
  CHECK(c.plan.offloaded_layers == 2);  // 1 of 8 saves nothing
  CHECK(c.plan.total() < no_offload_min);
  CHECK(c.summary.find("block inputs of 2 of 8 layers in host memory") != std::string::npos);
  // The host must hold the offloaded inputs: with room for 3 only, no plan past 3 layers.
  const int64_t layer_bytes = 65536 * 64 * 2;
  const int64_t most_offload = plan_of(in, 7, 1024).total();
  c = choose_activation_schedule(in, {}, device_of(most_offload * 20 / 19 + 20, 3 * layer_bytes));
  CHECK_FALSE(c.fits);
  CHECK(c.advice.find("more host memory: offloading 7 layers' inputs needs 56.00 MiB") !=
        std::string::npos);
  c = choose_activation_schedule(in, {}, device_of(most_offload * 20 / 19 + 20, 7 * layer_bytes));
  CHECK(c.fits);
  CHECK(c.plan.offloaded_layers == 7);
  CHECK(c.plan.host_bytes == 7 * layer_bytes);
}

TEST_CASE("fixed choices are kept; the CPU backend never offloads on its own") {
  const MemoryPlanInput in = eight_layers(4096);
  ScheduleRequest fixed;
  fixed.tile_tokens = 1000;
  fixed.offload = OffloadMode::On;
  ScheduleChoice c = choose_activation_schedule(in, fixed, MemoryBudget{});
  CHECK(c.plan.tile_tokens == 1000);
  CHECK(c.plan.offloaded_layers == 7);
  fixed.offload = OffloadMode::Off;
  c = choose_activation_schedule(in, fixed, device_of(1 << 20));
  CHECK_FALSE(c.fits);
  CHECK(c.plan.offloaded_layers == 0);
  ScheduleRequest cpu;
  cpu.offload_useful = false;
  MemoryPlanInput cpu_in = in;
  cpu_in.backend = backend_traits(BackendKind::Cpu);
  c = choose_activation_schedule(cpu_in, cpu, device_of(plan_of(cpu_in, 0, 1024).total() * 2));
  CHECK(c.fits);
  CHECK(c.plan.offloaded_layers == 0);
  fixed.tile_tokens = 4097;
  CHECK_THROWS_WITH_AS(
      choose_activation_schedule(in, fixed, MemoryBudget{}),
      doctest::Contains("--tile-tokens 4097: a tile has between 1 and -ctx (4096)"), Error);
}

TEST_CASE("nothing fits: the smallest plan's numbers and what would fit") {
  MemoryPlanInput in = eight_layers(262144);
  const ScheduleChoice c = choose_activation_schedule(in, {}, device_of(int64_t(100) << 20));
  CHECK_FALSE(c.fits);
  CHECK(c.summary.find("does not fit: the smallest plan (block inputs of 7 of 8 layers in host "
                       "memory") != std::string::npos);
  CHECK(c.advice.find("fewer tokens: -ctx ") != std::string::npos);
  // The suggested context does fit.
  const size_t at = c.advice.find("-ctx ") + 5;
  const int64_t ctx = std::stoll(c.advice.substr(at));
  in.seq_len = ctx;
  CHECK(choose_activation_schedule(in, {}, device_of(int64_t(100) << 20)).fits);
  in.seq_len = ctx + 1024;
  CHECK_FALSE(choose_activation_schedule(in, {}, device_of(int64_t(100) << 20)).fits);
  CHECK(parse_offload_mode("on") == OffloadMode::On);
  CHECK_THROWS_WITH_AS(parse_offload_mode("sometimes"),
                       doctest::Contains("--offload-activations sometimes is not one of auto, on, "
                                         "off"),
                       Error);
}

TEST_CASE("the data-parallel path is suggested when the optimizer state is what does not fit") {
  // A huge trained embedding: its AdamW state dominates. Sharding it pays once the shards
  // outweigh the gathered copy (sharded_rank_footprint): 8 ranks here.
  MemoryPlanInput in = eight_layers(1024);
  in.config.vocab_size = 1 << 20;
  in.trainable = TrainableSet::lora_plus();
  in.backend = backend_traits(BackendKind::Cpu);
  const MemoryPlan one = plan_of(in, 0, 0);
  const RankFootprint eight = sharded_rank_footprint(one, 8, false);
  REQUIRE(eight.total < one.total());
  const ScheduleChoice c =
      choose_activation_schedule(in, {}, device_of(eight.total * 20 / 19 + 20));
  CHECK_FALSE(c.fits);
  CHECK(c.advice.find("8 GPUs with the data-parallel path (mpirun -np 8)") != std::string::npos);
}
