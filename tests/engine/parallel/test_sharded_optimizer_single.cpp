// The sharded optimizer in a world of one (`train_longlora --sharded-optimizer`) against the
// single-process optimizer step (engine/train/optimizer_step.h): the same gradient norm and the
// same weights and moments bit for bit, over several steps with and without clipping, whether the
// gradients are reported bucket by bucket (the backward hook) or not at all. Also: parameters
// without moments start from zeros, bf16 values receive the rounded masters, the grads become
// views of one flat buffer, the export / import round trip, re-sharding of optimizer state
// between world sizes against slicing a full vector by hand, and the messages for mismatched or
// damaged shards.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "common/dtype.h"
#include "common/error.h"
#include "engine/parallel/communicator.h"
#include "engine/parallel/sharded_optimizer.h"
#include "engine/train/optimizer_step.h"
#include "kernels/cpu/cpu_backend.h"
#include "optim/grad_clip.h"
#include "tests/data/scratch.h"

using namespace ll;
using ll::dist::full_optimizer_state;
using ll::dist::OptimizerShard;
using ll::dist::reshard_optimizer_state;
using ll::dist::ShardedOptimizer;
using ll::dist::ShardLayout;
using ll::dist::SingleProcessCommunicator;
using ll::dist::split_by_tensor;
using ll::test::error_of;

namespace {

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// Odd shapes (and an empty one) so that nothing lines up with block sizes.
const std::vector<std::vector<int64_t>> kShapes = {{7}, {100}, {1}, {33, 5}, {0}, {4, 16}};

std::vector<float> host(Backend& backend, const OwnedTensor& t) {
  std::vector<float> values(size_t(t->numel()));  // [numel]
  backend.download_f32(values.data(), *t);
  return values;
}

void upload_random(Backend& backend, const OwnedTensor& t, std::mt19937& rng, float lo, float hi) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> values(size_t(t->numel()));  // [numel]
  for (float& x : values) x = dist(rng);
  backend.upload_f32(*t, values.data());
}

// Parameters as the CPU model makes them (value shares the master's storage), with random
// masters and non-zero moments (as after a resume), all from `seed`.
std::vector<TrainableParam> make_params(Backend& backend, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<TrainableParam> params;
  for (size_t i = 0; i < kShapes.size(); ++i) {
    TrainableParam p;
    p.name = "param" + std::to_string(i);
    p.shape = kShapes[i];
    p.master = backend.allocate(p.shape, DType::F32);
    p.value = p.master;
    p.grad = backend.allocate(p.shape, DType::F32);
    p.exp_avg = backend.allocate(p.shape, DType::F32);
    p.exp_avg_sq = backend.allocate(p.shape, DType::F32);
    upload_random(backend, p.master, rng, -1.0f, 1.0f);
    upload_random(backend, p.grad, rng, -1.0f, 1.0f);
    upload_random(backend, p.exp_avg, rng, -0.1f, 0.1f);
    upload_random(backend, p.exp_avg_sq, rng, 0.0f, 0.01f);
    params.push_back(std::move(p));
  }
  return params;
}

// Fresh random gradients, the same into both sets.
void set_grads(Backend& backend, std::vector<TrainableParam>& a, std::vector<TrainableParam>& b,
               uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 0.5f);
  for (size_t i = 0; i < a.size(); ++i) {
    std::vector<float> g(size_t(a[i].grad->numel()));  // [numel]
    for (float& x : g) x = dist(rng);
    backend.upload_f32(*a[i].grad, g.data());
    backend.upload_f32(*b[i].grad, g.data());
  }
}

bool same_bytes(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

// The flat vector of every tensor's `which` state, params order.
std::vector<float> flat_state(Backend& backend, const std::vector<TrainableParam>& params,
                              OwnedTensor TrainableParam::*which) {
  std::vector<float> flat;  // [T]
  for (const TrainableParam& p : params) {
    const std::vector<float> v = host(backend, p.*which);
    flat.insert(flat.end(), v.begin(), v.end());
  }
  return flat;
}

// A made-up optimizer state of layout `layout` cut from full vectors [T] (values i, -i, 2i).
std::vector<OptimizerShard> shards_of(const ShardLayout& layout) {
  std::vector<OptimizerShard> shards;
  for (int r = 0; r < layout.world_size(); ++r) {
    OptimizerShard s;
    s.rank = r;
    s.world_size = layout.world_size();
    const auto range = layout.shard_range(r);
    for (int64_t i = range.begin; i < range.end; ++i) {
      s.master.push_back(float(i));
      s.exp_avg.push_back(-float(i));
      s.exp_avg_sq.push_back(2.0f * float(i));
    }
    shards.push_back(s);
  }
  return shards;
}

}  // namespace

TEST_CASE("a world of one equals gradient_norm + adamw_update_all bit for bit") {
  CpuBackend backend;
  SingleProcessCommunicator world;
  std::vector<TrainableParam> sharded = make_params(backend, 11);
  std::vector<TrainableParam> reference = make_params(backend, 11);
  ShardedOptimizer optimizer(backend, world, sharded);
  REQUIRE(optimizer.layout().total_size() == 7 + 100 + 1 + 165 + 0 + 64);
  REQUIRE(optimizer.layout().shard_size(0) == optimizer.layout().total_size());

  AdamWConfig config;
  config.weight_decay = 0.01;
  // Norms of these gradients are about 8: clipping at 1 and 0.5 is active, 0 and 100 are not.
  const double max_norms[] = {1.0, 0.0, 100.0, 0.5, 1.0};
  int clipped = 0;
  for (int64_t step = 1; step <= 5; ++step) {
    CAPTURE(step);
    set_grads(backend, sharded, reference, uint32_t(100 + step));
    const double lr = 1e-2 / double(step);
    const double max_norm = max_norms[step - 1];
    const double norm = optimizer.step(config, lr, step, max_norm, fmt::format("step {}", step));
    const double reference_norm = gradient_norm(backend, reference);
    const double coefficient = clip_coefficient(reference_norm, max_norm);
    clipped += coefficient < 1.0;
    adamw_update_all(backend, reference, config, lr, step, float(coefficient));
    CHECK(norm == reference_norm);
    CHECK(same_bytes(flat_state(backend, sharded, &TrainableParam::master),
                     flat_state(backend, reference, &TrainableParam::master)));
    const OptimizerShard state = optimizer.export_shard();
    CHECK(same_bytes(state.master, flat_state(backend, reference, &TrainableParam::master)));
    CHECK(same_bytes(state.exp_avg, flat_state(backend, reference, &TrainableParam::exp_avg)));
    CHECK(
        same_bytes(state.exp_avg_sq, flat_state(backend, reference, &TrainableParam::exp_avg_sq)));
  }
  CHECK(clipped == 3);
}

TEST_CASE("gradients reported in buckets, in any order, give the same step bit for bit") {
  CpuBackend backend;
  SingleProcessCommunicator world;
  std::vector<TrainableParam> bucketed = make_params(backend, 31);
  std::vector<TrainableParam> reference = make_params(backend, 31);
  ShardedOptimizer optimizer(backend, world, bucketed);
  // The grads are views of one flat buffer, params order, their values kept.
  for (size_t t = 1; t < bucketed.size(); ++t) {
    CHECK(static_cast<const char*>(bucketed[t].grad->data) ==
          static_cast<const char*>(bucketed[t - 1].grad->data) + 4 * bucketed[t - 1].grad->numel());
    CHECK(same_bytes(host(backend, bucketed[t].grad), host(backend, reference[t].grad)));
  }
  // Reports as the model's backward makes them (last layer first), some params left to step().
  const std::vector<std::vector<int>> orders[] = {
      {{5}, {3, 4}, {1, 2}, {0}}, {{2}, {0, 5}}, {}, {{0, 1, 2, 3, 4, 5}}};
  int64_t step = 0;
  for (const auto& order : orders) {
    ++step;
    CAPTURE(step);
    set_grads(backend, bucketed, reference, uint32_t(200 + step));
    const std::string context = fmt::format("step {}", step);
    for (const std::vector<int>& bucket : order) optimizer.gradients_ready(bucket, context);
    const double norm = optimizer.step(AdamWConfig{}, 1e-2, step, 1.0, context);
    const double reference_norm = gradient_norm(backend, reference);
    adamw_update_all(backend, reference, AdamWConfig{}, 1e-2, step,
                     float(clip_coefficient(reference_norm, 1.0)));
    CHECK(norm == reference_norm);
    CHECK(same_bytes(flat_state(backend, bucketed, &TrainableParam::master),
                     flat_state(backend, reference, &TrainableParam::master)));
  }
  const int twice[] = {3, 3};
  CHECK(contains(error_of([&] { optimizer.gradients_ready(twice, "step 9"); }),
                 "the gradients of \"param3\" were reported twice in one step"));
  const int once[] = {4};
  optimizer.gradients_ready(once, "step 9");
  CHECK(contains(error_of([&] { optimizer.gradients_ready(once, "step 9"); }),
                 "the gradients of \"param4\" were reported twice in one step"));
  const int outside[] = {6};
  CHECK(contains(error_of([&] { optimizer.gradients_ready(outside, "step 9"); }),
                 "gradients reported for parameter 6 of 6"));
}

TEST_CASE("parameters without moments start from zero moments") {
  CpuBackend backend;
  SingleProcessCommunicator world;
  std::vector<TrainableParam> params = make_params(backend, 41);
  std::vector<TrainableParam> reference = make_params(backend, 41);
  for (TrainableParam& p : params) {
    p.exp_avg = OwnedTensor{};
    p.exp_avg_sq = OwnedTensor{};
  }
  for (TrainableParam& p : reference) {
    backend.fill_zero(*p.exp_avg);
    backend.fill_zero(*p.exp_avg_sq);
  }
  ShardedOptimizer optimizer(backend, world, params);
  for (int64_t step = 1; step <= 2; ++step) {
    set_grads(backend, params, reference, uint32_t(300 + step));
    optimizer.step(AdamWConfig{}, 1e-2, step, 1.0, "step");
    adamw_update_all(backend, reference, AdamWConfig{}, 1e-2, step,
                     float(clip_coefficient(gradient_norm(backend, reference), 1.0)));
  }
  const OptimizerShard state = optimizer.export_shard();
  CHECK(same_bytes(state.exp_avg, flat_state(backend, reference, &TrainableParam::exp_avg)));
  CHECK(same_bytes(state.exp_avg_sq, flat_state(backend, reference, &TrainableParam::exp_avg_sq)));
  CHECK(same_bytes(flat_state(backend, params, &TrainableParam::master),
                   flat_state(backend, reference, &TrainableParam::master)));
}

TEST_CASE("bf16 values receive the updated masters rounded to nearest even") {
  CpuBackend backend;
  SingleProcessCommunicator world;
  std::vector<TrainableParam> params = make_params(backend, 51);
  std::vector<TrainableParam> reference = make_params(backend, 51);
  for (TrainableParam& p : params) {
    p.value = backend.allocate(p.shape, DType::BF16);
    std::memset(p.value->data, 0, p.value->nbytes());
  }
  ShardedOptimizer optimizer(backend, world, params);
  set_grads(backend, params, reference, 61);
  optimizer.step(AdamWConfig{}, 1e-2, 1, 1.0, "step 1");
  adamw_update_all(backend, reference, AdamWConfig{}, 1e-2, 1,
                   float(clip_coefficient(gradient_norm(backend, reference), 1.0)));
  for (size_t t = 0; t < params.size(); ++t) {
    const std::vector<float> master = host(backend, reference[t].master);
    const uint16_t* value = static_cast<const uint16_t*>(params[t].value->data);
    for (size_t i = 0; i < master.size(); ++i) REQUIRE(value[i] == f32_to_bf16(master[i]));
  }
  const OwnedTensor f32 = backend.allocate({5}, DType::F32);
  const OwnedTensor bf16 = backend.allocate({5}, DType::BF16);
  const float values[] = {1.00390625f, 1.01171875f, -3.0e-39f, std::nanf(""), 65504.5f};
  backend.upload_f32(*f32, values);
  backend.copy(*bf16, *f32);
  const uint16_t* got = static_cast<const uint16_t*>(bf16->data);
  for (int i = 0; i < 5; ++i) {
    CAPTURE(i);
    CHECK(got[i] == f32_to_bf16(values[i]));
  }
  CHECK(got[0] == 0x3f80);  // 1 + 2^-8: a tie, rounded to the even 1.0
  CHECK(got[1] == 0x3f82);  // 1 + 3 * 2^-8: a tie, rounded up to the even 1 + 2^-6
  CHECK(contains(error_of([&] { backend.copy(*f32, *bf16); }), "copy: BF16 into F32"));
}

TEST_CASE("a value tensor separate from the master is updated too") {
  CpuBackend backend;
  SingleProcessCommunicator world;
  std::vector<TrainableParam> params = make_params(backend, 5);
  std::vector<TrainableParam> reference = make_params(backend, 5);
  for (TrainableParam& p : params) {
    p.value = backend.allocate(p.shape, DType::F32);
    backend.fill_zero(*p.value);
  }
  ShardedOptimizer optimizer(backend, world, params);
  set_grads(backend, params, reference, 77);
  optimizer.step(AdamWConfig{}, 1e-3, 1, 1.0, "step 1");
  adamw_update_all(backend, reference, AdamWConfig{}, 1e-3, 1,
                   float(clip_coefficient(gradient_norm(backend, reference), 1.0)));
  CHECK(same_bytes(flat_state(backend, params, &TrainableParam::value),
                   flat_state(backend, reference, &TrainableParam::master)));
}

TEST_CASE("export and import round trip; a fresh optimizer continues where the old one stopped") {
  CpuBackend backend;
  SingleProcessCommunicator world;
  std::vector<TrainableParam> first = make_params(backend, 21);
  std::vector<TrainableParam> second = make_params(backend, 22);  // other starting state
  ShardedOptimizer a(backend, world, first);
  set_grads(backend, first, second, 1);
  a.step(AdamWConfig{}, 1e-2, 1, 1.0, "step 1");
  const OptimizerShard saved = a.export_shard();

  // Resume: params from the checkpoint's trainable tensors, moments from the shard.
  for (size_t i = 0; i < first.size(); ++i) {
    const std::vector<float> v = host(backend, first[i].master);
    backend.upload_f32(*second[i].master, v.data());
  }
  ShardedOptimizer b(backend, world, second);
  b.import_shard(saved);
  const OptimizerShard restored = b.export_shard();
  CHECK(same_bytes(restored.master, saved.master));
  CHECK(same_bytes(restored.exp_avg, saved.exp_avg));
  CHECK(same_bytes(restored.exp_avg_sq, saved.exp_avg_sq));

  set_grads(backend, first, second, 2);
  a.step(AdamWConfig{}, 1e-2, 2, 1.0, "step 2");
  b.step(AdamWConfig{}, 1e-2, 2, 1.0, "step 2");
  CHECK(same_bytes(flat_state(backend, first, &TrainableParam::master),
                   flat_state(backend, second, &TrainableParam::master)));

  OptimizerShard wrong = saved;
  wrong.world_size = 2;
  CHECK(contains(error_of([&] { b.import_shard(wrong); }),
                 "importing the optimizer state: expected the optimizer shard of rank 0 of 1, got "
                 "rank 0 of 2"));
  wrong = saved;
  wrong.exp_avg_sq.pop_back();
  CHECK(contains(error_of([&] { b.import_shard(wrong); }),
                 "rank 0 of 1's optimizer shard holds 336 exp_avg_sq values, its layout 337"));
}

TEST_CASE("re-sharding optimizer state between world sizes moves every element") {
  const std::vector<int64_t> sizes = {7, 100, 1, 165, 0, 64};  // T = 337
  for (int from_world : {1, 2, 3, 4}) {
    const ShardLayout from(sizes, from_world);
    const std::vector<OptimizerShard> shards = shards_of(from);
    const OptimizerShard full = full_optimizer_state(from, shards);
    CHECK(full.world_size == 1);
    REQUIRE(full.master.size() == 337);
    for (size_t i = 0; i < full.master.size(); ++i) {
      CHECK(full.master[i] == float(i));
      CHECK(full.exp_avg[i] == -float(i));
      CHECK(full.exp_avg_sq[i] == 2.0f * float(i));
    }
    for (int to_world : {1, 2, 3, 5}) {
      const ShardLayout to(sizes, to_world);
      const std::vector<OptimizerShard> expected = shards_of(to);
      for (int r = 0; r < to_world; ++r) {
        const OptimizerShard got = reshard_optimizer_state(from, shards, to, r);
        CHECK(got.rank == r);
        CHECK(got.world_size == to_world);
        CHECK(got.master == expected[size_t(r)].master);
        CHECK(got.exp_avg == expected[size_t(r)].exp_avg);
        CHECK(got.exp_avg_sq == expected[size_t(r)].exp_avg_sq);
      }
    }
  }
  const ShardLayout layout(sizes, 3);
  const std::vector<std::vector<float>> tensors =
      split_by_tensor(layout, full_optimizer_state(layout, shards_of(layout)).master);
  REQUIRE(tensors.size() == sizes.size());
  for (size_t t = 0; t < sizes.size(); ++t) {
    REQUIRE(int64_t(tensors[t].size()) == sizes[t]);
    for (int64_t j = 0; j < sizes[t]; ++j)
      CHECK(tensors[t][size_t(j)] == float(layout.tensor_offset(int(t)) + j));
  }
}

TEST_CASE("mismatched or damaged shards are refused with a message") {
  const std::vector<int64_t> sizes = {7, 100, 1, 165, 0, 64};
  const ShardLayout from(sizes, 3);
  const ShardLayout to(sizes, 2);
  std::vector<OptimizerShard> shards = shards_of(from);

  std::vector<OptimizerShard> missing(shards.begin(), shards.begin() + 2);
  CHECK(contains(error_of([&] { reshard_optimizer_state(from, missing, to, 0); }),
                 "re-sharding the optimizer state: 2 shards given for a checkpoint of 3 ranks"));
  std::vector<OptimizerShard> swapped = shards;
  std::swap(swapped[0], swapped[1]);
  CHECK(contains(error_of([&] { reshard_optimizer_state(from, swapped, to, 0); }),
                 "expected the optimizer shard of rank 0 of 3, got rank 1 of 3"));
  std::vector<OptimizerShard> short_one = shards;
  short_one[2].master.resize(5);
  CHECK(contains(error_of([&] { reshard_optimizer_state(from, short_one, to, 1); }),
                 "rank 2 of 3's optimizer shard holds 5 master values, its layout 112"));
  const ShardLayout other_model({7, 100, 1, 165, 0, 65}, 2);
  CHECK(contains(error_of([&] { reshard_optimizer_state(from, shards, other_model, 0); }),
                 "trainable tensor 5 has 64 elements in the checkpoint but 65 in this run"));
  CHECK(contains(error_of([&] { split_by_tensor(from, std::vector<float>(3)); }),
                 "3 values for 337 trainable elements"));

  CpuBackend backend;
  SingleProcessCommunicator world;
  std::vector<TrainableParam> untrained = make_params(backend, 3);
  untrained[2].grad = OwnedTensor{};
  CHECK(contains(error_of([&] { ShardedOptimizer(backend, world, untrained); }),
                 "parameter \"param2\" has no grad tensor (was the model set up for training?)"));
  std::vector<TrainableParam> wrong_moment = make_params(backend, 3);
  wrong_moment[1].exp_avg_sq = backend.allocate({3}, DType::F32);
  CHECK(contains(error_of([&] { ShardedOptimizer(backend, world, wrong_moment); }),
                 "parameter \"param1\"'s exp_avg_sq has 3 elements, its master 100"));
  std::vector<TrainableParam> wrong_grad = make_params(backend, 3);
  wrong_grad[3].grad = backend.allocate({165, 2}, DType::F32);
  CHECK(contains(error_of([&] { ShardedOptimizer(backend, world, wrong_grad); }),
                 "parameter \"param3\"'s grad has 330 elements, its master 165"));
}

TEST_CASE("a non-finite gradient norm throws before anything is updated") {
  CpuBackend backend;
  SingleProcessCommunicator world;
  std::vector<TrainableParam> params = make_params(backend, 9);
  ShardedOptimizer optimizer(backend, world, params);
  const std::vector<float> before = flat_state(backend, params, &TrainableParam::master);
  std::vector<float> g = host(backend, params[1].grad);
  g[17] = std::nanf("");
  backend.upload_f32(*params[1].grad, g.data());
  CHECK(contains(error_of([&] { optimizer.step(AdamWConfig{}, 1e-2, 1, 1.0, "step 4"); }),
                 "step 4: the gradient norm is not finite (nan)"));
  CHECK(same_bytes(flat_state(backend, params, &TrainableParam::master), before));
}
