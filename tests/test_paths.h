#pragma once
// Locations tests use: fixtures in the source tree, built tools, and a fresh temp directory.
#include <unistd.h>

#include <filesystem>
#include <string>

namespace ll::test {

inline std::string source_path(const std::string& rel) {
  return std::string(LL_SOURCE_DIR) + "/" + rel;
}
inline std::string binary_path(const std::string& rel) {
  return std::string(LL_BINARY_DIR) + "/" + rel;
}

// A directory unique to this process and name, emptied on creation.
inline std::filesystem::path fresh_temp_dir(const std::string& name) {
  auto dir = std::filesystem::temp_directory_path() /
             ("ll_test_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

}  // namespace ll::test
