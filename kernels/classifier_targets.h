#pragma once
// Label checks shared by the classifier of every backend.
#include <cstdint>

namespace ll {

// Number of labelled positions (target >= 0) among targets [n]; throws ll::Error naming the
// first target >= vocab and its position (a target < 0 means "no label").
int64_t count_labelled_targets(const int32_t* targets, int64_t n, int64_t vocab);

}  // namespace ll
