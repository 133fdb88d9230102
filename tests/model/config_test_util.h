#pragma once
// The config-parsing tests' check: parsing a document named "cfg/config.json" fails with a
// message that names the file and the offending field.
#include <doctest/doctest.h>

#include <string>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "model/llama_config.h"

namespace ll::test {

// The message of the ll::Error that parsing `doc` throws ("" when it parses).
inline std::string parse_error(const nlohmann::json& doc) {
  try {
    llama_config_from_json(doc, "cfg/config.json");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

inline void check_rejected(const nlohmann::json& doc, const std::string& word) {
  const std::string msg = parse_error(doc);
  INFO("message: ", msg);
  CHECK(msg.find("cfg/config.json") != std::string::npos);
  CHECK(msg.find(word) != std::string::npos);
}

}  // namespace ll::test
