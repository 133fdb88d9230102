// The memory plan against what the CPU backend actually allocates: the parameters after
// construction and the peak of a training step, byte for byte, for several setups, and the
// data-parallel step's rank footprint (sharded optimizer, no full moments) the same way.
#include <doctest/doctest.h>

#include <vector>

#include "engine/parallel/communicator.h"
#include "engine/parallel/sharded_optimizer.h"
#include "kernels/cpu/cpu_backend.h"
#include "kernels/cuda/gemm_workspace.h"
#include "model/llama_model.h"
#include "model/memory_plan.h"

namespace {

using namespace ll;

LlamaConfig small_config() {
  LlamaConfig c;
  c.vocab_size = 53;
  c.hidden_size = 24;
  c.intermediate_size = 40;
  c.num_hidden_layers = 3;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.max_position_embeddings = 16;
  c.rms_norm_eps = 1e-5;
  return c;
}

int64_t item_bytes(const MemoryPlan& plan, const std::string& name) {
  for (const MemoryItem& it : plan.items)
    if (it.name == name) return it.bytes;
  FAIL("no plan item " << name);
  return 0;
}

}  // namespace

TEST_CASE("the memory plan equals the CPU backend's allocations and peak") {
  struct Case {
    const char* name;
    bool lora;
    std::vector<std::string> targets;
    TrainableSet trainable;
    AttnMode mode;
  };
  const Case cases[] = {
      {"LoRA+ q,k,v,o S2",
       true,
       {"q_proj", "k_proj", "v_proj", "o_proj"},
       TrainableSet::lora_plus(),
       AttnMode::S2},
      {"LoRA all-linear, nothing else", true, lora_target_names(), TrainableSet::nothing(),
       AttnMode::Dense},
      {"full training", false, {}, TrainableSet::everything(), AttnMode::Dense},
  };
  // (tile rows, offloaded layers): whole, ragged tiles, offload of 1 and of every layer but the
  // last (3 layers), both.
  const std::pair<int64_t, int64_t> schedules[] = {{0, 0}, {5, 0}, {0, 1}, {0, 2}, {7, 2}, {16, 1}};
  for (const Case& cs : cases) {
    for (const int64_t n : {int64_t(16), int64_t(37)}) {
      for (const auto& [tile, offloaded] : schedules) {
        CAPTURE(cs.name);
        CAPTURE(n);
        CAPTURE(tile);
        CAPTURE(offloaded);
        const LlamaConfig config = small_config();
        ModelSetup setup;
        if (cs.lora) {
          setup.lora = LoraConfig{};
          setup.lora->rank = 5;
          setup.lora->targets = cs.targets;
        }
        setup.trainable = cs.trainable;
        setup.training = true;
        MemoryPlanInput in;
        in.config = config;
        in.lora = setup.lora;
        in.trainable = cs.trainable;
        in.seq_len = n;
        in.classifier_chunk = 8;
        in.tile_tokens = tile;
        in.offloaded_layers = offloaded;
        const MemoryPlan plan = plan_training_memory(in);
        CHECK(plan.tile_tokens == (tile == 0 || tile >= n ? n : tile));
        CHECK(plan.host_bytes == offloaded * n * config.hidden_size * 4);

        CpuBackend backend;
        LlamaModel model(backend, random_llama_weights(config, 1), setup);
        CHECK(backend.bytes_in_use() == plan.parameter_bytes);
        std::vector<int32_t> tokens(static_cast<size_t>(n)), targets(static_cast<size_t>(n));
        for (int64_t i = 0; i < n; ++i) {
          tokens[size_t(i)] = int32_t((i * 7) % 53);
          targets[size_t(i)] = i + 1 < n ? int32_t(((i + 1) * 7) % 53) : -1;
        }
        ForwardSpec spec;
        spec.attn_mode = cs.mode;
        spec.group_size = 4;
        spec.classifier_chunk = 8;
        spec.tile_tokens = tile;
        spec.offloaded_layers = offloaded;
        backend.reset_peak();
        model.forward_backward(tokens, targets, spec, 1.0f);
        CHECK(backend.peak_bytes() - plan.parameter_bytes == plan.step_bytes);
        CHECK(backend.bytes_in_use() == plan.parameter_bytes);  // nothing leaks
        // The offloaded inputs' host buffers stay for the next step (pinning once).
        CHECK(backend.memory().host_in_use == plan.host_bytes);
        CHECK(backend.memory().host_peak == plan.host_bytes);
      }
    }
  }
}

TEST_CASE("offload and tiles shrink the step as the plan says") {
  MemoryPlanInput in;
  in.config = small_config();
  in.lora = LoraConfig{};
  in.seq_len = 64;
  const MemoryPlan whole = plan_training_memory(in);
  const int64_t nd = 64 * 24 * 4;
  in.offloaded_layers = 2;  // every input but the last layer's: two staging buffers remain
  const MemoryPlan offloaded = plan_training_memory(in);
  CHECK(item_bytes(offloaded, "offload staging") == 2 * nd);
  CHECK(offloaded.host_bytes == 2 * nd);
  CHECK(offloaded.peak_phase == whole.peak_phase);
  CHECK(whole.step_bytes - offloaded.step_bytes == nd);  // 3 inputs on the device become 2
  in.offloaded_layers = 1;  // layer 0 to host, layer 1 staged: no saving yet
  CHECK(plan_training_memory(in).step_bytes == whole.step_bytes);
  in.offloaded_layers = 3;
  CHECK_THROWS_WITH_AS(plan_training_memory(in), doctest::Contains("at most 2"), Error);
  in.offloaded_layers = 0;
  in.tile_tokens = 8;  // [64, 40] MLP tensors become [8, 40]
  const MemoryPlan tiled = plan_training_memory(in);
  CHECK(tiled.step_bytes < whole.step_bytes);
  CHECK(format_memory_plan(tiled).find("tiles of 8 tokens") != std::string::npos);
  CHECK(format_memory_plan(offloaded).find("host (pinned)") != std::string::npos);
}

TEST_CASE("Llama-2-7B at 100k tokens: the plan's parts") {
  LlamaConfig c;
  c.vocab_size = 32000;
  c.hidden_size = 4096;
  c.intermediate_size = 11008;
  c.num_hidden_layers = 32;
  c.num_attention_heads = 32;
  c.num_key_value_heads = 32;
  c.max_position_embeddings = 4096;
  c.rms_norm_eps = 1e-5;
  MemoryPlanInput in;
  in.config = c;
  in.lora = LoraConfig{};
  in.seq_len = 100000;
  in.backend = backend_traits(BackendKind::Cuda);
  const MemoryPlan plan = plan_training_memory(in);
  // Frozen: every weight but embed_tokens and the norms, bf16.
  const int64_t linear = int64_t(32) * (4 * 4096 * 4096 + 3 * 4096 * 11008) + int64_t(32000) * 4096;
  CHECK(item_bytes(plan, "frozen weights") == 2 * linear);
  // Saved activations: 32 x 100000 x 4096 bf16 = 26.2 GB.
  CHECK(item_bytes(plan, "saved activations") == int64_t(32) * 100000 * 4096 * 2);
  // Trained: embeddings, 65 norms, LoRA r 8 on q,k,v,o of 32 layers.
  const int64_t trained = int64_t(32000) * 4096 + 65 * 4096 + 32 * 4 * (8 * 4096 + 4096 * 8);
  CHECK(item_bytes(plan, "trained parameters") == trained * (4 + 2));
  CHECK(item_bytes(plan, "AdamW moments") == trained * 8);
  CHECK(plan.total() > int64_t(40) << 30);
  CHECK(format_memory_plan(plan).find("total (peak)") != std::string::npos);

  // The atomic-dQ attention backward's accumulator: [100000, 4096] fp32, 1.6 GB more.
  CHECK(format_memory_plan(plan).find("attention dQ") == std::string::npos);
  in.backend = backend_traits(BackendKind::Cuda, AttentionKernel::TcSm90AtomicDq);
  const MemoryPlan atomic = plan_training_memory(in);
  CHECK(item_bytes(atomic, "attention dQ accum.") == int64_t(100000) * 4096 * 4);
  CHECK(atomic.total() == plan.total() + int64_t(100000) * 4096 * 4);
}

TEST_CASE("the plan's CUDA items come from the backend traits") {
  MemoryPlanInput in;
  in.config = small_config();  // head dim 6
  in.lora = LoraConfig{};
  in.seq_len = 40;
  const MemoryPlan cpu = plan_training_memory(in);  // default: the CPU backend's traits
  CHECK(format_memory_plan(cpu).find("cuBLASLt") == std::string::npos);
  CHECK(format_memory_plan(cpu).find("F32") != std::string::npos);

  BackendTraits traits = backend_traits(BackendKind::Cuda);
  traits.fixed_workspace_bytes = 12345;  // whatever the traits say, not a constant of the plan
  in.backend = traits;
  const MemoryPlan cuda = plan_training_memory(in);
  CHECK(item_bytes(cuda, "cuBLASLt workspace") == 12345);
  CHECK(format_memory_plan(cuda).find("BF16") != std::string::npos);
  CHECK(2 * item_bytes(cuda, "saved activations") == item_bytes(cpu, "saved activations"));
  CHECK(backend_traits(BackendKind::Cuda).fixed_workspace_bytes == cuda::kGemmWorkspaceBytes);

  // An explicit tensor-core family without kernels for head dim 6 fails at the plan, before a
  // run (train_longlora --dry-run too); auto and simt plan it.
  in.backend = backend_traits(BackendKind::Cuda, AttentionKernel::TcSm80);
  CHECK_THROWS_WITH_AS(plan_training_memory(in),
                       doctest::Contains("--attention-kernel tc-sm80: its kernels take head dims "
                                         "64 and 128, this model has head dim 6"),
                       Error);
  in.backend = backend_traits(BackendKind::Cuda, AttentionKernel::Simt);
  CHECK_NOTHROW(plan_training_memory(in));
  // The dQ accumulator is the atomic-dQ family's: named with the flag that asks for it.
  in.config.hidden_size = 256;  // head dim 64
  in.backend = backend_traits(BackendKind::Cuda, AttentionKernel::TcSm90);
  const MemoryPlan deterministic = plan_training_memory(in);
  in.backend = backend_traits(BackendKind::Cuda, AttentionKernel::TcSm90AtomicDq);
  const MemoryPlan atomic = plan_training_memory(in);
  CHECK(item_bytes(atomic, "attention dQ accum.") == 40 * 256 * 4);
  CHECK(atomic.total() == deterministic.total() + 40 * 256 * 4);
  CHECK(format_memory_plan(atomic).find("--attention-kernel tc-sm90-atomic-dq") !=
        std::string::npos);
}

TEST_CASE("the data-parallel rank footprint equals the CPU backend's allocations (world of one)") {
  const LlamaConfig config = small_config();
  ModelSetup setup;
  setup.lora = LoraConfig{};
  setup.lora->rank = 5;
  setup.trainable = TrainableSet::lora_plus();
  setup.training = true;
  setup.optimizer_moments = false;  // as the trainer sets it for the sharded step
  const int64_t n = 29;
  MemoryPlanInput in;
  in.config = config;
  in.lora = setup.lora;
  in.trainable = setup.trainable;
  in.seq_len = n;
  in.classifier_chunk = 8;
  const MemoryPlan plan = plan_training_memory(in);
  const RankFootprint f = sharded_rank_footprint(plan, 1, false);
  CHECK(f.shard == f.trained);
  CHECK(f.full_moments == item_bytes(plan, "AdamW moments"));

  CpuBackend backend;
  LlamaModel model(backend, random_llama_weights(config, 1), setup);
  CHECK(backend.bytes_in_use() == plan.parameter_bytes - f.full_moments);
  dist::SingleProcessCommunicator world;
  dist::ShardedOptimizer optimizer(backend, world, model.params());
  const int64_t parameters = f.total - plan.step_bytes;
  CHECK(backend.bytes_in_use() == parameters);
  std::vector<int32_t> tokens(static_cast<size_t>(n)), targets(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    tokens[size_t(i)] = int32_t((i * 5) % 53);
    targets[size_t(i)] = int32_t(((i + 1) * 5) % 53);
  }
  ForwardSpec spec;
  spec.attn_mode = AttnMode::S2;
  spec.group_size = 4;
  spec.classifier_chunk = 8;
  backend.reset_peak();
  model.forward_backward(tokens, targets, spec, 1.0f,
                         [&](std::span<const int> ps) { optimizer.gradients_ready(ps, "step 1"); });
  optimizer.step(AdamWConfig{}, 1e-3, 1, 1.0, "step 1");
  CHECK(backend.peak_bytes() - parameters == plan.step_bytes);
  CHECK(backend.bytes_in_use() == parameters);
}
