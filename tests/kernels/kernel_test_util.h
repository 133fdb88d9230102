#pragma once
// Shared helpers for the kernel tests: seeds (one fixed, one fresh), random fills, NaN
// poisoning and the error measure of DESIGN.md section 4.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "tests/error_text.h"  // error_of, contains

namespace ll::test {

// A fixed seed (reproducible) and a fresh one (new inputs every run), printed so a failure
// can be replayed; LL_TEST_SEED=<n> replaces the fresh seed.
inline std::vector<uint64_t> test_seeds() {
  static const uint64_t fresh = [] {
    if (const char* env = std::getenv("LL_TEST_SEED"))
      return uint64_t(std::strtoull(env, nullptr, 10));
    std::random_device rd;
    return (uint64_t(rd()) << 32) ^ uint64_t(rd());
  }();
  MESSAGE("random seed " << fresh << " (replay with LL_TEST_SEED=" << fresh << ")");
  return {12345u, fresh};
}

inline std::vector<float> random_uniform(std::mt19937_64& rng, size_t n, float lo = -1.0f,
                                         float hi = 1.0f) {
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

inline std::vector<float> poisoned(size_t n) {
  return std::vector<float>(n, std::numeric_limits<float>::quiet_NaN());
}

// check_close's relative-norm bound for a result that sums terms which may cancel (accumulating
// onto existing contents): fp32 rounding scales with the terms, so the bound is `tol` of the
// terms' norm (terms[i] = sum of |term| for element i) where that exceeds the result's norm.
inline double rel_norm_tol_of_terms(const std::vector<double>& ref,
                                    const std::vector<double>& terms, double tol = 1e-5) {
  double r2 = 0.0, t2 = 0.0;
  for (size_t i = 0; i < ref.size(); ++i) {
    r2 += ref[i] * ref[i];
    t2 += terms[i] * terms[i];
  }
  return tol * std::max(1.0, r2 > 0.0 ? std::sqrt(t2 / r2) : 1.0);
}

// Every element finite (so written, since outputs start as NaN), ||out - ref|| / ||ref|| below
// rel_norm_tol, and |out - ref| <= atol + rtol * |ref| per element. NaN never passes.
inline void check_close(const std::vector<float>& out, const std::vector<double>& ref, double atol,
                        double rtol, double rel_norm_tol = 1e-5) {
  REQUIRE(out.size() == ref.size());
  double diff2 = 0.0, ref2 = 0.0;
  size_t bad = 0, not_finite = 0, first_bad = 0;
  double worst = 0.0;  // largest |out - ref| / (atol + rtol * |ref|)
  for (size_t i = 0; i < out.size(); ++i) {
    if (!std::isfinite(ref[i])) FAIL("reference element " << i << " is not finite: " << ref[i]);
    const double d = double(out[i]) - ref[i];
    if (!std::isfinite(out[i])) {
      if (not_finite++ == 0) first_bad = i;
      continue;
    }
    diff2 += d * d;
    ref2 += ref[i] * ref[i];
    const double allowed = atol + rtol * std::fabs(ref[i]);
    worst = std::max(worst, allowed > 0.0 ? std::fabs(d) / allowed : (d == 0.0 ? 0.0 : 1e300));
    if (!(std::fabs(d) <= allowed)) {
      if (bad++ == 0 && not_finite == 0) first_bad = i;
    }
  }
  INFO("first offending element " << first_bad << ": out " << out[first_bad] << " ref "
                                  << ref[first_bad]);
  CHECK_MESSAGE(not_finite == 0, not_finite << " elements are NaN/Inf (unwritten?)");
  CHECK_MESSAGE(bad == 0, bad << " elements exceed atol " << atol << " + rtol " << rtol);
  const double rel = ref2 > 0.0 ? std::sqrt(diff2 / ref2) : std::sqrt(diff2);
  CHECK_MESSAGE(rel < rel_norm_tol, "||out - ref|| / ||ref|| = " << rel);
  // LL_TEST_VERBOSE=1 shows how much of each tolerance was used.
  if (std::getenv("LL_TEST_VERBOSE") != nullptr) {
    MESSAGE("relative error " << rel << " (limit " << rel_norm_tol << "), worst element at "
                              << worst << " of its tolerance");
  }
}

}  // namespace ll::test
