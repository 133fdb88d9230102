// Our .bin format: written from a HF directory or from memory, read back with every tensor
// 4096-aligned, giving the same fp32 weights bit for bit; F16/BF16 storage rounds exactly as
// the scalar conversions do.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include "model/formats/bin_format.h"
#include "model/formats/tensor_source.h"
#include "model/llama_weights.h"
#include "tests/model/model_fixtures.h"

using ll::DType;
using ll::test::TempDir;

namespace {

// What a weight looks like after storage in `dtype` and conversion back to fp32.
std::vector<float> rounded(const std::vector<float>& v, DType dtype) {
  std::vector<float> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    out[i] = dtype == DType::F16    ? ll::f16_to_f32(ll::f32_to_f16(v[i]))
             : dtype == DType::BF16 ? ll::bf16_to_f32(ll::f32_to_bf16(v[i]))
                                    : v[i];
  }
  return out;
}

ll::LlamaWeights rounded(const ll::LlamaWeights& w, DType dtype) {
  ll::LlamaWeights r = w;
  r.embed_tokens = rounded(w.embed_tokens, dtype);
  r.norm = rounded(w.norm, dtype);
  r.lm_head = rounded(w.lm_head, dtype);
  for (auto& l : r.layers) {
    for (auto* v : {&l.input_layernorm, &l.q_proj, &l.k_proj, &l.v_proj, &l.o_proj,
                    &l.post_attention_layernorm, &l.gate_proj, &l.up_proj, &l.down_proj}) {
      *v = rounded(*v, dtype);
    }
  }
  return r;
}

}  // namespace

TEST_CASE(".bin from a HF directory equals the HF load, for each source and target dtype") {
  TempDir dir("bin_roundtrip");
  const ll::LlamaWeights w = ll::random_llama_weights(ll::test::tiny_config(), 11);
  for (DType src : {DType::F32, DType::BF16, DType::F16}) {
    const auto hf_dir = dir.path / fmt::format("hf_{}", ll::dtype_name(src));
    ll::test::write_hf_model(hf_dir, w, src, src == DType::F16 ? 2 : 1);
    auto hf = ll::open_model_files(hf_dir.string());
    const ll::LlamaWeights from_hf = ll::load_llama_weights(*hf);
    CHECK(ll::test::weights_equal(from_hf, rounded(w, src)));  // f16/bf16 decode exactly

    for (DType dst : {DType::F32, DType::BF16, DType::F16}) {
      CAPTURE(ll::dtype_name(src));
      CAPTURE(ll::dtype_name(dst));
      const std::string bin =
          dir.file(fmt::format("m_{}_{}.bin", ll::dtype_name(src), ll::dtype_name(dst)));
      std::vector<ll::TensorEntry> tensors;
      for (const auto& s : ll::llama_tensor_specs(hf->config))
        tensors.push_back(*hf->tensors.find(s.name));
      ll::write_model_bin(bin, hf->config, dst, tensors);
      auto files = ll::open_model_files(bin);
      CHECK(files->path == bin);
      for (const auto& [name, t] : files->tensors.entries()) {
        CHECK(t.dtype == dst);
      }
      const ll::LlamaWeights from_bin = ll::load_llama_weights(*files);
      // Storing in the source dtype or wider is lossless; narrower rounds like the scalar ops.
      const bool lossless = dst == src || dst == DType::F32;
      CHECK(ll::test::weights_equal(from_bin, lossless ? from_hf : rounded(from_hf, dst)));
    }
  }
}

TEST_CASE(".bin layout: magic, version, 4096-aligned tensors, file ends at the last tensor") {
  TempDir dir("bin_layout");
  const ll::LlamaWeights w = ll::random_llama_weights(ll::test::tiny_config(), 12);
  const std::string bin = dir.file("m.bin");
  ll::write_model_bin(bin, w.config, DType::BF16, ll::llama_weights_tensors(w));
  const std::string bytes = ll::test::read_bytes(bin);
  CHECK(bytes.compare(0, 8, "LLORABIN") == 0);
  uint32_t version = 0, header_len = 0;
  std::memcpy(&version, bytes.data() + 8, 4);
  std::memcpy(&header_len, bytes.data() + 12, 4);
  CHECK(version == 1);
  CHECK((16 + header_len) % 4096 == 0);
  const auto header = nlohmann::json::parse(bytes.substr(16, header_len));
  CHECK(header["dtype"] == "BF16");
  CHECK(header["config"]["model_type"] == "llama");
  uint64_t end = 0;
  for (const auto& t : header["tensors"]) {
    CHECK(t["offset"].get<uint64_t>() % 4096 == 0);
    end = t["offset"].get<uint64_t>() + t["nbytes"].get<uint64_t>();
  }
  CHECK(end == bytes.size());
  CHECK(header["tensors"].size() == 21);

  auto files = ll::open_model_files(bin);
  CHECK(files->tokenizer_path.empty());
  for (const auto& [name, t] : files->tensors.entries()) {
    CHECK(reinterpret_cast<uintptr_t>(t.data) % 4096 == 0);  // mmap base is page-aligned
  }
  ll::test::write_text(dir.path / "tokenizer.model", "x");
  CHECK(ll::open_model_files(bin)->tokenizer_path == dir.file("tokenizer.model"));
  CHECK(ll::test::weights_equal(ll::load_llama_weights(*files), rounded(w, DType::BF16)));
}

TEST_CASE("the writer refuses values the target dtype cannot hold, leaving no file") {
  TempDir dir("bin_writer");
  ll::LlamaWeights w = ll::random_llama_weights(ll::test::tiny_config(), 13);
  w.layers[1].up_proj[5] = 1e6f;  // beyond F16's 65504
  const std::string bin = dir.file("m.bin");
  CHECK_THROWS_WITH_AS(ll::write_model_bin(bin, w.config, DType::F16, ll::llama_weights_tensors(w)),
                       doctest::Contains("does not fit in F16"), ll::Error);
  CHECK(!std::filesystem::exists(bin));
  ll::write_model_bin(bin, w.config, DType::BF16, ll::llama_weights_tensors(w));  // fits
  const ll::LlamaWeights good = w;
  w.layers[0].q_proj[3] = std::nanf("");
  CHECK_THROWS_WITH_AS(ll::write_model_bin(bin, w.config, DType::F32, ll::llama_weights_tensors(w)),
                       doctest::Contains("NaN"), ll::Error);
  // The failed write left the previous file in place, intact.
  CHECK(ll::test::weights_equal(ll::load_llama_weights(*ll::open_model_files(bin)),
                                rounded(good, DType::BF16)));
}

TEST_CASE("a checkpoint written by Hugging Face transformers converts losslessly") {
  const std::filesystem::path hf =
      std::filesystem::path(LL_SOURCE_DIR) / "tests/fixtures/tiny_llama";
  if (!std::filesystem::exists(hf / "model.safetensors")) {
    MESSAGE("skipped: no ", hf.string());
    return;
  }
  TempDir dir("bin_hf_fixture");
  auto files = ll::open_model_files(hf.string());
  CHECK(!files->tokenizer_path.empty());
  std::vector<ll::TensorEntry> tensors;
  for (const auto& s : ll::llama_tensor_specs(files->config))
    tensors.push_back(*files->tensors.find(s.name));
  const std::string bin = dir.file("tiny.bin");
  ll::write_model_bin(bin, files->config, DType::F32, tensors);
  const ll::LlamaWeights a = ll::load_llama_weights(*files);
  const ll::LlamaWeights b = ll::load_llama_weights(*ll::open_model_files(bin));
  CHECK(ll::test::weights_equal(a, b));
  CHECK(ll::llama_config_to_json(a.config) == ll::llama_config_to_json(b.config));
}
