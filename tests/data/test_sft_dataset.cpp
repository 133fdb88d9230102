// SFT data: the record file formats and their errors, the two prompt templates, and the
// tokens and labels of an example checked against the official recipe recomputed here
// (HF-style labels with the source masked, then shifted into next-token targets).
#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "data/sft_dataset.h"
#include "data/tokenizer.h"
#include "kernels/attention_pattern.h"
#include "kernels/cpu/cpu_backend.h"
#include "model/formats/tensor_source.h"
#include "model/llama_model.h"
#include "model/llama_weights.h"
#include "tests/data/scratch.h"

using ll::SftExample;
using ll::SftRecord;
using ll::test::contains;
using ll::test::error_of;

namespace {

const std::string kKjvModel = std::string(LL_SOURCE_DIR) + "/models/kjv-tiny";
const std::string kKjvTokenizer = kKjvModel + "/tokenizer.model";

// The official prompt_input_llama2 with {instruction} and {input} filled in, written out in
// full (not through the engine's constant).
std::string llama2_prompt(const std::string& instruction, const std::string& input) {
  return "[INST] <<SYS>>\n"
         "You are a helpful, respectful and honest assistant. Always answer as helpfully as "
         "possible, while being safe.  Your answers should not include any harmful, unethical, "
         "racist, sexist, toxic, dangerous, or illegal content. Please ensure that your "
         "responses are socially unbiased and positive in nature.\n\n"
         "If a question does not make any sense, or is not factually coherent, explain why "
         "instead of answering something not correct. If you don't know the answer to a "
         "question, please don't share false information.\n"
         "<</SYS>> \n\n " +
         instruction + " \n" + input + " [/INST]";
}

// What supervised-fine-tune.py trains on, recomputed: input_ids = tokenizer(source + output +
// "</s>") with BOS, truncated to max_len; labels = input_ids with [:source_len] = -100, where
// source_len = len(tokenizer(source)) (truncated too); the model predicts labels[t+1] at t.
struct Reference {
  std::vector<int32_t> tokens, targets;
  int64_t labelled = 0;
};
Reference official(const ll::Tokenizer& tok, const std::string& source, const std::string& output,
                   size_t max_len) {
  std::vector<int32_t> ids = {int32_t(tok.bos_id())};
  for (int id : tok.encode(source + output)) ids.push_back(id);
  ids.push_back(int32_t(tok.eos_id()));
  if (ids.size() > max_len) ids.resize(max_len);
  const size_t source_len = std::min(tok.encode(source).size() + 1, max_len);
  std::vector<int32_t> labels = ids;
  for (size_t i = 0; i < source_len; ++i) labels[i] = -100;
  Reference r;
  r.tokens = ids;
  for (size_t t = 0; t < ids.size(); ++t) {
    const int32_t label = t + 1 < ids.size() ? labels[t + 1] : -100;
    r.targets.push_back(label == -100 ? -1 : label);
    if (label != -100) ++r.labelled;
  }
  return r;
}

std::vector<SftRecord> parse(const std::string& text) {
  return ll::parse_sft_records(text, "d.json");
}

}  // namespace

TEST_CASE("prompts: [INST]...[/INST] without input, the Llama-2 system template with it") {
  CHECK(ll::sft_prompt({"Summarize the book.", "", "x"}) == "[INST]Summarize the book.[/INST]");
  const std::string with_input = ll::sft_prompt({"Summarize the book.", "Chapter 1 ...", "x"});
  CHECK(with_input == llama2_prompt("Summarize the book.", "Chapter 1 ..."));
  // The details that are easy to get wrong.
  CHECK(contains(with_input, "while being safe.  Your answers"));
  CHECK(contains(with_input,
                 "false information.\n<</SYS>> \n\n Summarize the book. \nChapter 1 ... [/INST]"));
  CHECK(with_input.rfind("[INST] <<SYS>>\nYou are a helpful", 0) == 0);
}

TEST_CASE("an example's tokens and targets are the official recipe's; only answer + EOS labelled") {
  for (const std::string& path : {kKjvTokenizer, ll::test::fixture_tokenizer()}) {
    CAPTURE(path);
    const ll::Tokenizer tok(path);
    const std::vector<SftRecord> records = {
        {"Who built the ark?", "", "Noah built the ark of gopher wood."},
        {"Name the son of Abraham.", "Abraham was an hundred years old.", "Isaac."},
        {"Say nothing.", "", ""},  // the EOS is still an answer token
    };
    for (const SftRecord& rec : records) {
      CAPTURE(rec.instruction);
      const std::string source = rec.input.empty() ? "[INST]" + rec.instruction + "[/INST]"
                                                   : llama2_prompt(rec.instruction, rec.input);
      const Reference ref = official(tok, source, rec.output, 100000);
      const SftExample ex = ll::tokenize_sft_record(rec, tok, 100000);
      CHECK(ex.tokens == ref.tokens);
      CHECK(ll::sft_targets(ex) == ref.targets);
      CHECK(ex.labelled() == ref.labelled);
      CHECK_FALSE(ex.truncated);
      // Masked positions are exactly those before source_len - 1 (predicting prompt tokens).
      const std::vector<int32_t> targets = ll::sft_targets(ex);
      const int64_t source_len = int64_t(tok.encode(source).size()) + 1;
      CHECK(ex.source_len == source_len);
      for (int64_t t = 0; t < int64_t(targets.size()); ++t) {
        CAPTURE(t);
        const bool labelled = t >= source_len - 1 && t + 1 < int64_t(targets.size());
        CHECK((targets[size_t(t)] >= 0) == labelled);
      }
      // The first token is BOS, the last EOS, and the EOS is a target.
      CHECK(ex.tokens.front() == tok.bos_id());
      CHECK(ex.tokens.back() == tok.eos_id());
      CHECK(targets[targets.size() - 2] == tok.eos_id());
      CHECK(targets.back() == -1);
    }
  }
}

TEST_CASE("truncation at max_tokens, and the records that lose every answer token") {
  const ll::Tokenizer tok(kKjvTokenizer);
  const SftRecord rec{
      "Who built the ark?", "",
      "Noah built the ark of gopher wood, and pitched it within and without with pitch."};
  const std::string source = "[INST]" + rec.instruction + "[/INST]";
  const int64_t source_len = int64_t(tok.encode(source).size()) + 1;
  const int64_t full = int64_t(tok.encode(source + rec.output).size()) + 2;
  REQUIRE(full > source_len + 3);

  // Cut inside the answer: the first max tokens, the EOS gone, the rest still labelled.
  const int64_t max = source_len + 3;
  const SftExample cut = ll::tokenize_sft_record(rec, tok, max);
  const Reference ref = official(tok, source, rec.output, size_t(max));
  CHECK(cut.truncated);
  CHECK(cut.tokens == ref.tokens);
  CHECK(int64_t(cut.tokens.size()) == max);
  CHECK(ll::sft_targets(cut) == ref.targets);
  CHECK(cut.labelled() == 3);
  CHECK(cut.tokens.back() != tok.eos_id());

  // Exactly the full length is not truncated.
  CHECK_FALSE(ll::tokenize_sft_record(rec, tok, full).truncated);

  // The prompt alone fills max: nothing to learn.
  const SftExample none = ll::tokenize_sft_record(rec, tok, source_len);
  CHECK(none.truncated);
  CHECK(none.labelled() == 0);
  CHECK(ll::sft_targets(none) == std::vector<int32_t>(size_t(source_len), -1));

  // Counting: one kept whole, one kept truncated, one skipped by truncation.
  const std::vector<SftRecord> records = {
      {"Hi.", "", "Yes."}, rec, {rec.instruction + " " + rec.output + rec.output, "", "x"}};
  const ll::SftDataset ds = ll::build_sft_dataset(records, tok, max, "d.json");
  CHECK(ds.records == 3);
  REQUIRE(ds.examples.size() == 2);
  CHECK(ds.examples[0].record == 0);
  CHECK(ds.examples[1].record == 1);
  CHECK(ds.truncated == 1);
  CHECK(ds.skipped_truncated == 1);
  CHECK(ds.skipped_unlabelled == 0);
  CHECK(ds.examples[1].tokens == cut.tokens);
  const ll::SftDatasetSummary sum = ll::summarize_sft_dataset(ds);
  const int64_t len0 = int64_t(ds.examples[0].tokens.size());
  CHECK(sum.tokens == len0 + max);
  CHECK(sum.labelled_tokens == ds.examples[0].labelled() + 3);
  CHECK(sum.min_len == std::min(len0, max));
  CHECK(sum.max_len == std::max(len0, max));
  CHECK(sum.median_len == std::min(len0, max));  // the lower of two

  // Every record skipped: an error that says why.
  const std::string msg =
      error_of([&] { ll::build_sft_dataset({rec}, tok, source_len, "d.json"); });
  CHECK(contains(msg, "d.json"));
  CHECK(contains(msg, "-ctx"));
}

TEST_CASE("examples without an answer token (tokenizer merges) are skipped and counted") {
  // Hand-made tokenizations: the collect step does not care where they came from.
  auto example = [](int64_t n, int64_t source_len, bool truncated) {
    SftExample ex;
    ex.tokens.assign(size_t(n), 7);
    ex.source_len = source_len;
    ex.truncated = truncated;
    return ex;
  };
  std::vector<SftExample> all = {example(5, 3, false), example(4, 4, false), example(6, 6, true),
                                 example(6, 2, true), example(3, 4, false)};
  for (size_t i = 0; i < all.size(); ++i) all[i].record = int64_t(i);
  const ll::SftDataset ds = ll::collect_sft_examples(all, 6, "d.json");
  CHECK(ds.records == 5);
  REQUIRE(ds.examples.size() == 2);
  CHECK(ds.examples[0].record == 0);
  CHECK(ds.examples[1].record == 3);
  CHECK(ds.skipped_unlabelled == 2);
  CHECK(ds.skipped_truncated == 1);
  CHECK(ds.truncated == 1);
  CHECK(ds.skipped() == 3);
}

TEST_CASE("a JSON array and JSON Lines give the same records; extra fields are ignored") {
  const std::string array =
      "\xEF\xBB\xBF  \n[\n"
      "  {\"instruction\": \"Q1\", \"output\": \"A1\", \"file\": \"x.pdf\"},\n"
      "  {\"instruction\": \"Q2\", \"input\": \"ctx \\u00e9\", \"output\": \"A2\"},\n"
      "  {\"instruction\": \"Q3\", \"input\": null, \"output\": \"A3\", \"n\": [1, 2]}\n"
      "]\n";
  const std::string lines =
      "{\"instruction\": \"Q1\", \"output\": \"A1\", \"file\": \"x.pdf\"}\n"
      "\n"
      "{\"instruction\": \"Q2\", \"input\": \"ctx \\u00e9\", \"output\": \"A2\"}\r\n"
      "{\"instruction\": \"Q3\", \"input\": null, \"output\": \"A3\", \"n\": [1, 2]}";
  for (const std::string& text : {array, lines}) {
    const std::vector<SftRecord> r = parse(text);
    REQUIRE(r.size() == 3);
    CHECK(r[0].instruction == "Q1");
    CHECK(r[0].input == "");
    CHECK(r[0].output == "A1");
    CHECK(r[1].input == "ctx \xC3\xA9");
    CHECK(r[2].input == "");
    CHECK(r[2].output == "A3");
  }

  // From a file.
  ll::test::ScratchDir dir("sft_dataset");
  ll::test::write_file(dir.file("a.jsonl"), lines);
  CHECK(ll::read_sft_records(dir.file("a.jsonl")).size() == 3);
}

TEST_CASE("malformed JSON names the file, line and column") {
  SUBCASE("array") {
    const std::string msg = error_of([] {
      parse("[\n  {\"instruction\": \"Q1\", \"output\": \"A1\"},\n  {\"instruction\" \"Q2\"}\n]");
    });
    CHECK(contains(msg, "d.json:3:21:"));
    CHECK(contains(msg, "malformed JSON"));
  }
  SUBCASE("array cut short") {
    const std::string msg =
        error_of([] { parse("[\n {\"instruction\": \"Q1\", \"output\": \"A1\"},\n"); });
    CHECK(contains(msg, "d.json:3:"));
    CHECK(contains(msg, "end of input"));
  }
  SUBCASE("JSON Lines") {
    const std::string msg = error_of([] {
      parse("{\"instruction\": \"Q1\", \"output\": \"A1\"}\n\n{\"instruction\": \"Q2\", output}\n");
    });
    CHECK(contains(msg, "d.json:3:23:"));
    CHECK(contains(msg, "JSON Lines"));
  }
  SUBCASE("invalid UTF-8") {
    const std::string msg =
        error_of([] { parse("[{\"instruction\": \"Q\xff\", \"output\": \"A\"}]"); });
    CHECK(contains(msg, "d.json:1:"));
    CHECK(contains(msg, "UTF-8"));
  }
}

TEST_CASE("bad records name the record and the field") {
  struct Case {
    std::string text, expect1, expect2;
  };
  const std::vector<Case> cases = {
      {"[{\"instruction\": \"Q\", \"output\": \"A\"}, {\"instruction\": \"Q\"}]", "record 1",
       "missing \"output\""},
      {"[{\"output\": \"A\"}]", "record 0", "missing \"instruction\""},
      {"[{\"instruction\": \"Q\", \"input\": 3, \"output\": \"A\"}]", "record 0",
       "\"input\" must be a string, got a number"},
      {"[{\"instruction\": [\"Q\"], \"output\": \"A\"}]", "record 0",
       "\"instruction\" must be a string, got an array"},
      {"[{\"instruction\": \"Q\", \"output\": null}]", "record 0", "\"output\" must be a string"},
      {"[{\"instruction\": \"Q\", \"output\": \"A\"}, \"text\"]", "record 1", "got a string"},
      {"{\"instruction\": \"Q\", \"output\": \"A\"}\n{\"instruction\": \"Q\"}\n",
       "d.json:2: record 1", "missing \"output\""},
      {"\n[1, 2]\n", "record 0", "expected an object"},
  };
  for (const Case& c : cases) {
    CAPTURE(c.text);
    const std::string msg = error_of([&] { parse(c.text); });
    CHECK_MESSAGE(contains(msg, "d.json"), msg);
    CHECK_MESSAGE(contains(msg, c.expect1), msg);
    CHECK_MESSAGE(contains(msg, c.expect2), msg);
  }
}

TEST_CASE("empty and missing files are clear errors") {
  CHECK(contains(error_of([] { parse("[]"); }), "no records"));
  CHECK(contains(error_of([] { parse(" [ ]\n"); }), "d.json"));
  CHECK(contains(error_of([] { parse(""); }), "empty"));
  CHECK(contains(error_of([] { parse(" \n\n"); }), "empty"));
  CHECK(contains(error_of([] { parse("{\"a\": 1}"); }), "missing \"instruction\""));
  ll::test::ScratchDir dir("sft_dataset_missing");
  const std::string missing = dir.file("nope.json");
  std::string msg = error_of([&] { ll::read_sft_records(missing); });
  CHECK(contains(msg, missing));
  CHECK(contains(msg, "no such file"));
  msg = error_of([&] { ll::read_sft_records(dir.path().string()); });
  CHECK(contains(msg, "directory"));
}

namespace {

// Every trainable parameter's gradient, concatenated.
std::vector<float> all_grads(ll::LlamaModel& model) {
  std::vector<float> out;
  for (const ll::TrainableParam& p : model.params()) {
    std::vector<float> g(size_t(p.grad->numel()));
    model.backend().download_f32(g.data(), *p.grad);
    out.insert(out.end(), g.begin(), g.end());
  }
  return out;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  double m = 0.0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(double(a[i]) - double(b[i])));
  return m;
}

double max_abs(const std::vector<float>& a) {
  double m = 0.0;
  for (float x : a) m = std::max(m, std::fabs(double(x)));
  return m;
}

}  // namespace

TEST_CASE("the prompt carries no loss and no gradient; the loss is the answer's mean CE") {
  // The demo model and its tokenizer, LoRA+ as train_longlora sets it up, S2-Attn.
  const ll::Tokenizer tok(kKjvTokenizer);
  const SftRecord rec{"Who was swallowed by a great fish?", "The word of the LORD came unto Jonah.",
                      "Jonah was in the belly of the fish three days and three nights."};
  const SftExample ex = ll::tokenize_sft_record(rec, tok, 4096);
  const int64_t n = int64_t(ex.tokens.size());
  const std::vector<int32_t> targets = ll::sft_targets(ex);
  REQUIRE(ex.labelled() > 5);
  REQUIRE(ex.source_len > 50);  // the system template

  ll::CpuBackend backend;
  const ll::LlamaWeights weights = ll::load_llama_weights(*ll::open_model_files(kKjvModel));
  ll::ModelSetup setup;
  setup.lora = ll::LoraConfig{};
  setup.trainable = ll::TrainableSet::lora_plus();
  setup.training = true;
  setup.seed = 5;
  ll::LlamaModel model(backend, weights, setup);
  // B starts at zero (PEFT); give it values so the adapters carry gradient too.
  std::mt19937_64 rng(11);
  for (ll::TrainableParam& p : model.params()) {
    if (p.name.find("lora_B") == std::string::npos) continue;
    std::uniform_real_distribution<float> u(-0.05f, 0.05f);
    std::vector<float> v(size_t(p.master->numel()));
    for (float& x : v) x = u(rng);
    model.set_param(p, v);
  }
  ll::ForwardSpec spec;
  spec.attn_mode = ll::AttnMode::S2;
  spec.group_size = ll::s2_group_size(n, 0.25);
  spec.classifier_chunk = 37;

  // The reference loss: mean cross-entropy, in double, over the answer + EOS positions only,
  // from the full logits.
  const std::vector<float> logits = model.logits(ex.tokens, spec);  // [N, V]
  const int64_t v = model.config().vocab_size;
  double ce_sum = 0.0;
  int64_t ce_count = 0;
  for (int64_t t = ex.source_len - 1; t + 1 < n; ++t) {
    const float* row = &logits[size_t(t * v)];
    double mx = row[0];
    for (int64_t j = 1; j < v; ++j) mx = std::max(mx, double(row[j]));
    double z = 0.0;
    for (int64_t j = 0; j < v; ++j) z += std::exp(double(row[j]) - mx);
    ce_sum += mx + std::log(z) - double(row[ex.tokens[size_t(t + 1)]]);
    ++ce_count;
  }
  CHECK(ce_count == ex.labelled());

  const float scale = float(1.0 / double(ex.labelled()));  // the trainer's, with grad-accum 1
  model.zero_grads();
  const ll::LossSum sft = model.forward_backward(ex.tokens, targets, spec, scale);
  const std::vector<float> g_sft = all_grads(model);
  CHECK(sft.count == ex.labelled());
  CHECK(sft.sum / double(sft.count) == doctest::Approx(ce_sum / double(ce_count)).epsilon(1e-5));

  // The same from targets masked here by hand (every position before source_len - 1 set to
  // -1 explicitly): identical, bit for bit.
  std::vector<int32_t> by_hand(size_t(n), -1);
  for (int64_t t = ex.source_len - 1; t + 1 < n; ++t) by_hand[size_t(t)] = ex.tokens[size_t(t + 1)];
  model.zero_grads();
  const ll::LossSum hand = model.forward_backward(ex.tokens, by_hand, spec, scale);
  CHECK(hand.sum == sft.sum);
  CHECK(max_abs_diff(all_grads(model), g_sft) == 0.0);

  // Gradients add over disjoint label sets: the prompt's positions alone plus the answer's
  // equal every position together. A prompt position leaking into the SFT gradient would be
  // counted twice here.
  std::vector<int32_t> prompt_only(size_t(n), -1), every(size_t(n), -1);
  for (int64_t t = 0; t + 1 < n; ++t) {
    every[size_t(t)] = ex.tokens[size_t(t + 1)];
    if (t < ex.source_len - 1) prompt_only[size_t(t)] = ex.tokens[size_t(t + 1)];
  }
  model.zero_grads();
  const ll::LossSum p = model.forward_backward(ex.tokens, prompt_only, spec, scale);
  const std::vector<float> g_prompt = all_grads(model);
  model.zero_grads();
  const ll::LossSum all = model.forward_backward(ex.tokens, every, spec, scale);
  const std::vector<float> g_all = all_grads(model);
  CHECK(p.count + sft.count == all.count);
  CHECK(p.sum + sft.sum == doctest::Approx(all.sum).epsilon(1e-5));
  std::vector<float> g_sum(g_sft.size());
  for (size_t i = 0; i < g_sum.size(); ++i) g_sum[i] = g_sft[i] + g_prompt[i];
  CHECK(max_abs_diff(g_sum, g_all) <= 1e-4 * max_abs(g_all));
  // ... and the prompt's positions do carry gradient when labelled, so the check can fail.
  CHECK(max_abs_diff(g_all, g_sft) > 1e-2 * max_abs(g_all));
}
