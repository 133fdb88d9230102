#pragma once
// Checking error messages in tests: the text of an expected ll::Error, and substring search.
#include <functional>
#include <string>

#include "common/error.h"

namespace ll::test {

// The message of the ll::Error that f throws, or "<no error>" when it throws nothing.
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const ll::Error& e) {
    return e.what();
  }
  return "<no error>";
}

inline bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

}  // namespace ll::test
