// safetensors write -> read round trips for every dtype we support, plus the layout rules
// the writer promises (header padded to 8 bytes, data contiguous in the order given).
#include <doctest/doctest.h>

#include <cstring>

#include "model/formats/safetensors.h"
#include "tests/model/model_fixtures.h"

using ll::DType;
using ll::test::TempDir;

namespace {

std::vector<uint8_t> pattern(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = uint8_t(seed + 37 * i + (i >> 3));
  return v;
}

}  // namespace

TEST_CASE("round trip of every dtype, metadata, scalars and empty tensors") {
  TempDir dir("safetensors_roundtrip");
  const std::string path = dir.file("a.safetensors");
  struct Spec {
    const char* name;
    DType dtype;
    std::vector<int64_t> shape;
  };
  const std::vector<Spec> specs = {
      {"f32", DType::F32, {3, 5}}, {"f16", DType::F16, {7}},    {"bf16", DType::BF16, {2, 3, 2}},
      {"i32", DType::I32, {4}},    {"i64", DType::I64, {2, 2}}, {"u16", DType::U16, {9}},
      {"u32", DType::U32, {1, 3}}, {"scalar", DType::F32, {}},  {"empty", DType::F16, {0, 4}},
  };
  std::vector<std::vector<uint8_t>> data;
  std::vector<ll::SafetensorsTensor> tensors;
  for (size_t i = 0; i < specs.size(); ++i) {
    int64_t n = 1;
    for (int64_t d : specs[i].shape) n *= d;
    data.push_back(pattern(size_t(n) * ll::dtype_size(specs[i].dtype), uint8_t(i)));
  }
  for (size_t i = 0; i < specs.size(); ++i) {
    tensors.push_back({specs[i].name, specs[i].dtype, specs[i].shape, data[i].data()});
  }
  ll::write_safetensors(path, tensors, {{"format", "pt"}, {"note", "ünïcode"}});

  const std::string bytes = ll::test::read_bytes(path);
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes.data(), 8);
  CHECK(header_len % 8 == 0);

  const ll::SafetensorsFile f = ll::read_safetensors(path);
  REQUIRE(f.tensors.size() == specs.size());
  CHECK(f.metadata.at("format") == "pt");
  CHECK(f.metadata.at("note") == "ünïcode");
  for (size_t i = 0; i < specs.size(); ++i) {
    CAPTURE(specs[i].name);
    const ll::TensorEntry& t = f.tensors[i];  // file order is the order written
    CHECK(t.name == specs[i].name);
    CHECK(t.dtype == specs[i].dtype);
    CHECK(t.shape == specs[i].shape);
    CHECK(t.file == path);
    REQUIRE(t.nbytes == data[i].size());
    CHECK(std::memcmp(t.data, data[i].data(), t.nbytes) == 0);
    CHECK(f.find(specs[i].name) == &t);
  }
  CHECK(f.find("nope") == nullptr);
  CHECK_THROWS_WITH_AS(f.at("nope"), doctest::Contains("missing tensor"), ll::Error);
}

TEST_CASE("read_f32 converts F16 and BF16, read_i32 widens and narrows integers") {
  TempDir dir("safetensors_convert");
  const std::string path = dir.file("b.safetensors");
  const std::vector<float> values = {1.0f, -2.5f, 0.0f, 65504.0f, 1.0f / 1024, -0.15625f};
  std::vector<uint16_t> f16, bf16;
  for (float v : values) {
    f16.push_back(ll::f32_to_f16(v));
    bf16.push_back(ll::f32_to_bf16(v));
  }
  const std::vector<int64_t> i64 = {0, -5, 2147483647, -2147483648LL};
  const std::vector<int64_t> big = {int64_t(1) << 40};
  const std::vector<uint16_t> u16 = {0, 65535};
  ll::write_safetensors(path, {{"f32", DType::F32, {6}, values.data()},
                               {"f16", DType::F16, {2, 3}, f16.data()},
                               {"bf16", DType::BF16, {6}, bf16.data()},
                               {"i64", DType::I64, {4}, i64.data()},
                               {"big", DType::I64, {1}, big.data()},
                               {"u16", DType::U16, {2}, u16.data()}});
  const ll::SafetensorsFile f = ll::read_safetensors(path);
  CHECK(f.read_f32("f32") == values);
  CHECK(f.read_f32("f16", {2, 3}) == values);  // all exactly representable in f16
  const std::vector<float> b = f.read_f32("bf16");
  CHECK(b[0] == 1.0f);
  CHECK(b[1] == -2.5f);
  CHECK(b[3] == 65536.0f);  // 65504 rounds to the nearest bf16
  CHECK(bf16[0] == 0x3f80);
  CHECK(f16[0] == 0x3c00);
  CHECK(f16[1] == 0xc100);
  CHECK_THROWS_WITH_AS(f.read_f32("f16", {6}), doctest::Contains("expected [6]"), ll::Error);
  CHECK_THROWS_WITH_AS(f.read_f32("i64"), doctest::Contains("floating"), ll::Error);
  CHECK(f.read_i32("i64") == std::vector<int32_t>{0, -5, 2147483647, -2147483647 - 1});
  CHECK(f.read_i32("u16") == std::vector<int32_t>{0, 65535});
  CHECK_THROWS_WITH_AS(f.read_i32("big"), doctest::Contains("int32"), ll::Error);
  CHECK_THROWS_WITH_AS(f.read_i32("f32"), doctest::Contains("integer"), ll::Error);
}

TEST_CASE("a file with no tensors and the writer's own refusals") {
  TempDir dir("safetensors_edge");
  const std::string path = dir.file("empty.safetensors");
  ll::write_safetensors(path, {});
  const ll::SafetensorsFile f = ll::read_safetensors(path);
  CHECK(f.tensors.empty());
  float x = 1;
  CHECK_THROWS_AS(
      ll::write_safetensors(path, {{"a", DType::F32, {1}, &x}, {"a", DType::F32, {1}, &x}}),
      ll::Error);
  CHECK_THROWS_AS(ll::write_safetensors(path, {{"__metadata__", DType::F32, {1}, &x}}), ll::Error);
  CHECK(ll::read_safetensors(path).tensors.empty());  // the failed writes left the old file
}
