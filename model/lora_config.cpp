#include "model/lora_config.h"

#include <algorithm>
#include <cmath>
#include <set>

#include <fmt/format.h>

#include "common/error.h"

namespace ll {
namespace {

// "a, b,c" -> {"a", "b", "c"}: comma-separated words, blanks around them dropped. An empty
// word ("a,,b", a trailing comma, an empty list) is kept as "" so callers can reject it.
std::vector<std::string> split_words(const std::string& list) {
  std::vector<std::string> words;
  size_t begin = 0;
  while (true) {
    const size_t end = list.find(',', begin);
    std::string word =
        list.substr(begin, end == std::string::npos ? std::string::npos : end - begin);
    const size_t first = word.find_first_not_of(" \t");
    const size_t last = word.find_last_not_of(" \t");
    words.push_back(first == std::string::npos ? std::string()
                                               : word.substr(first, last - first + 1));
    if (end == std::string::npos) break;
    begin = end + 1;
  }
  return words;
}

bool is_target_name(const std::string& name) {
  const auto& names = lora_target_names();
  return std::find(names.begin(), names.end(), name) != names.end();
}

}  // namespace

bool LoraConfig::targets_module(const std::string& module) const {
  return std::find(targets.begin(), targets.end(), module) != targets.end();
}

void LoraConfig::validate() const {
  LL_CHECK(rank >= 1, "LoRA rank must be at least 1, got {}", rank);
  LL_CHECK(std::isfinite(alpha) && alpha > 0, "LoRA alpha must be a positive number, got {}",
           alpha);
  LL_CHECK(!targets.empty(), "LoRA needs at least one target module; choose from {}",
           fmt::join(lora_target_names(), ", "));
  std::set<std::string> seen;
  for (const std::string& t : targets) {
    LL_CHECK(is_target_name(t), "unknown LoRA target module \"{}\"; choose from {} or all-linear",
             t, fmt::join(lora_target_names(), ", "));
    LL_CHECK(seen.insert(t).second, "LoRA target module \"{}\" is listed twice", t);
  }
}

std::vector<std::string> parse_lora_targets(const std::string& list) {
  const std::vector<std::string> words = split_words(list);
  if (words.size() == 1 && words[0] == "all-linear") return lora_target_names();
  std::vector<std::string> targets;
  for (const std::string& w : words) {
    LL_CHECK(!w.empty(),
             "LoRA targets \"{}\": empty module name; give a comma-separated list "
             "such as q_proj,k_proj,v_proj,o_proj, or all-linear",
             list);
    LL_CHECK(w != "all-linear",
             "LoRA targets \"{}\": all-linear cannot be combined with other "
             "names",
             list);
    LL_CHECK(is_target_name(w),
             "LoRA targets \"{}\": unknown module \"{}\"; choose from {} or "
             "all-linear",
             list, w, fmt::join(lora_target_names(), ", "));
    LL_CHECK(std::find(targets.begin(), targets.end(), w) == targets.end(),
             "LoRA targets \"{}\": module \"{}\" is listed twice", list, w);
    targets.push_back(w);
  }
  return targets;
}

TrainableSet parse_trainable(const std::string& list) {
  const std::vector<std::string> words = split_words(list);
  constexpr const char* kUsage =
      "use a comma-separated list of embed, norm, bias, linear, or none, or all";
  if (words.size() == 1 && words[0] == "none") return TrainableSet::nothing();
  if (words.size() == 1 && words[0] == "all") return TrainableSet::everything();
  TrainableSet set;
  for (const std::string& w : words) {
    bool* flag = w == "embed"    ? &set.embed_tokens
                 : w == "norm"   ? &set.norms
                 : w == "bias"   ? &set.bias
                 : w == "linear" ? &set.linear
                                 : nullptr;
    LL_CHECK(!w.empty(), "trainable \"{}\": empty word; {}", list, kUsage);
    LL_CHECK(w != "none" && w != "all",
             "trainable \"{}\": \"{}\" cannot be combined with other "
             "words",
             list, w);
    LL_CHECK(flag != nullptr, "trainable \"{}\": unknown word \"{}\"; {}", list, w, kUsage);
    LL_CHECK(!*flag, "trainable \"{}\": \"{}\" is listed twice", list, w);
    *flag = true;
  }
  return set;
}

std::string trainable_name(const TrainableSet& set) {
  if (set.embed_tokens && set.norms && set.bias && set.linear) return "all";
  std::vector<std::string> words;
  if (set.embed_tokens) words.push_back("embed");
  if (set.norms) words.push_back("norm");
  if (set.bias) words.push_back("bias");
  if (set.linear) words.push_back("linear");
  if (words.empty()) return "none";
  return fmt::format("{}", fmt::join(words, ","));
}

}  // namespace ll
