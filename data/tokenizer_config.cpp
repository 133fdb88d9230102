#include "data/tokenizer_config.h"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <iterator>

#include "common/error.h"

namespace ll {

namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

std::optional<json> read_json(const fs::path& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return std::nullopt;
  LL_CHECK(fs::file_size(path, ec) <= (uintmax_t(64) << 20), "{}: too large for a config file",
           path.string());
  std::ifstream in(path, std::ios::binary);
  LL_CHECK(in.good(), "{}: cannot read", path.string());
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  try {
    json j = json::parse(text);
    LL_CHECK(j.is_object(), "{}: expected a JSON object", path.string());
    return j;
  } catch (const json::parse_error& e) {
    fail("{}: not valid JSON at byte {}: {}", path.string(), e.byte, e.what());
  }
}

// tokenizer_config.json: "bos_token": "<s>" | {"content": "<s>", ...} | null.
SpecialTokenRef token_from_config(const json& cfg, const char* key, const std::string& file) {
  SpecialTokenRef r;
  if (!cfg.contains(key)) return r;
  r.given = true;
  const json& v = cfg.at(key);
  if (v.is_null()) return r;
  if (v.is_string()) {
    r.content = v.get<std::string>();
  } else if (v.is_object() && v.contains("content") && v.at("content").is_string()) {
    r.content = v.at("content").get<std::string>();
  } else {
    fail("{}: {}: expected a string, {{\"content\": string}} or null, got {}", file, key,
         v.type_name());
  }
  return r;
}

// config.json / generation_config.json: "eos_token_id": 2 | [128001, 128009] | null.
SpecialTokenRef token_from_ids(const json& cfg, const char* key, const std::string& file) {
  SpecialTokenRef r;
  if (!cfg.contains(key)) return r;
  r.given = true;
  const json& v = cfg.at(key);
  const json* first = &v;
  if (v.is_array()) {
    if (v.empty()) return r;
    first = &v[0];
  }
  if (first->is_null()) return r;
  LL_CHECK(first->is_number_integer() && first->get<int64_t>() >= 0 &&
               first->get<int64_t>() < (int64_t(1) << 24),
           "{}: {}: expected a token id (or a list of them), got {}", file, key,
           v.dump().substr(0, 60));
  r.id = int(first->get<int64_t>());
  return r;
}

}  // namespace

TokenizerSpecials read_tokenizer_specials(const std::string& dir) {
  TokenizerSpecials s;
  const fs::path d(dir.empty() ? "." : dir);
  std::vector<std::string> read;
  if (const auto cfg = read_json(d / "tokenizer_config.json")) {
    const std::string file = (d / "tokenizer_config.json").string();
    read.push_back(file);
    s.bos = token_from_config(*cfg, "bos_token", file);
    s.eos = token_from_config(*cfg, "eos_token", file);
    if (cfg->contains("add_bos_token") && !cfg->at("add_bos_token").is_null()) {
      LL_CHECK(cfg->at("add_bos_token").is_boolean(), "{}: add_bos_token: expected true or false",
               file);
      s.add_bos_token = cfg->at("add_bos_token").get<bool>();
    }
  }
  for (const char* name : {"generation_config.json", "config.json"}) {
    const auto cfg = read_json(d / name);
    if (!cfg) continue;
    const std::string file = (d / name).string();
    read.push_back(file);
    if (!s.bos.given) s.bos = token_from_ids(*cfg, "bos_token_id", file);
    if (!s.eos.given) s.eos = token_from_ids(*cfg, "eos_token_id", file);
  }
  for (const std::string& f : read) s.source += (s.source.empty() ? "" : ", ") + f;
  return s;
}

}  // namespace ll
