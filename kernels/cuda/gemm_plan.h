#pragma once
// The host-only half of the cuBLASLt GEMM (kernels/cuda/gemm.h): shape validation, the
// row-major -> column-major mapping, the plan cache key and the cache itself. No CUDA headers,
// so the CPU tests check all of it (tests/kernels/cuda/test_gemm_plan.cpp). C++17.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <unordered_map>
#include <utility>

#include "common/error.h"

namespace ll::cuda {

enum class GemmType { BF16, F32 };

inline int64_t gemm_type_bytes(GemmType t) { return t == GemmType::BF16 ? 2 : 4; }
inline const char* gemm_type_name(GemmType t) { return t == GemmType::BF16 ? "bf16" : "f32"; }

// A row-major matrix in device memory: element (r, c) at data + (r * ld + c) * element size.
struct GemmMatrix {
  const void* data = nullptr;
  GemmType type = GemmType::BF16;
  int64_t rows = 0, cols = 0, ld = 0;  // ld >= cols (elements)
};

// min(256, largest power of two dividing the address); 256 for nullptr. cuBLASLt's heuristic
// assumes 256-byte aligned buffers unless told otherwise (CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_*).
inline uint32_t alignment_class(const void* p) {
  const auto addr = reinterpret_cast<uintptr_t>(p);
  uint32_t align = 1;
  while (align < 256 && addr % (2 * uintptr_t(align)) == 0) align *= 2;
  return align;
}

// One operand as cublasLtMatrixLayoutCreate sees it: a column-major [rows, cols] matrix with
// leading dimension ld (>= rows), i.e. element (r, c) at data + (r + c * ld) * element size.
struct LtLayout {
  const void* data = nullptr;
  GemmType type = GemmType::BF16;
  int64_t rows = 0, cols = 0, ld = 0;
};

// BLAS-style column-major D[m, n] = op(A)[m, k] @ op(B)[k, n] with op = transpose when trans*.
// C (beta * C) is D itself.
struct ColumnMajorGemm {
  int64_t m = 0, n = 0, k = 0;
  bool transa = false, transb = false;
  LtLayout a;  // our B buffer
  LtLayout b;  // our A buffer
  LtLayout d;  // our D buffer (also cuBLASLt's C)
};

namespace gemm_detail {
inline void check_matrix(const GemmMatrix& x, const char* name) {
  LL_CHECK(x.rows >= 0 && x.cols >= 0, "gemm: {} has negative shape [{}, {}]", name, x.rows,
           x.cols);
  LL_CHECK(x.ld >= x.cols, "gemm: {} [{}, {}] has ld {} < cols {}", name, x.rows, x.cols, x.ld,
           x.cols);
  const bool empty = x.rows == 0 || x.cols == 0;
  LL_CHECK(empty || x.data != nullptr, "gemm: {} [{}, {}] has a null data pointer", name, x.rows,
           x.cols);
  // cuBLASLt needs at least element alignment.
  LL_CHECK(empty || int64_t(alignment_class(x.data)) >= gemm_type_bytes(x.type),
           "gemm: {} pointer {} is not aligned to its {} element size", name, x.data,
           gemm_type_name(x.type));
}
}  // namespace gemm_detail

// Validates a row-major D = op(A) @ op(B) (throws ll::Error) and maps it onto cuBLASLt:
// row-major X [r, c] with ld is column-major X^T [c, r] with the same ld, so row-major
// D = op(A) op(B) is column-major D^T = op(B)^T op(A)^T: cuBLASLt's A is our B (transposed
// iff trans_b), its B is our A (transposed iff trans_a), m = N, n = M.
inline ColumnMajorGemm to_column_major(const GemmMatrix& d, const GemmMatrix& a, bool trans_a,
                                       const GemmMatrix& b, bool trans_b) {
  using gemm_detail::check_matrix;
  LL_CHECK(a.type == GemmType::BF16 && b.type == GemmType::BF16,
           "gemm: A and B must be bf16 (got A {}, B {})", gemm_type_name(a.type),
           gemm_type_name(b.type));
  check_matrix(a, "A");
  check_matrix(b, "B");
  check_matrix(d, "D");
  const int64_t m = trans_a ? a.cols : a.rows, ka = trans_a ? a.rows : a.cols;  // op(A) [M, K]
  const int64_t kb = trans_b ? b.cols : b.rows, n = trans_b ? b.rows : b.cols;  // op(B) [K, N]
  LL_CHECK(ka == kb, "gemm: op(A) is [{}, {}] but op(B) is [{}, {}]: inner dimensions differ", m,
           ka, kb, n);
  LL_CHECK(d.rows == m && d.cols == n, "gemm: D is [{}, {}] but op(A) @ op(B) is [{}, {}]", d.rows,
           d.cols, m, n);
  ColumnMajorGemm g;
  g.m = n;
  g.n = m;
  g.k = ka;
  g.transa = trans_b;
  g.transb = trans_a;
  g.a = {b.data, b.type, b.cols, b.rows, b.ld};
  g.b = {a.data, a.type, a.cols, a.rows, a.ld};
  g.d = {d.data, d.type, d.cols, d.rows, d.ld};
  return g;
}

// Everything a plan (matmul descriptor, layouts, heuristic's algorithm) depends on. alpha and
// beta are not in it: they are passed at each call and do not change the algorithm choice.
struct GemmPlanKey {
  int64_t m = 0, n = 0, k = 0;
  bool transa = false, transb = false;
  int64_t lda = 0, ldb = 0, ldd = 0;
  GemmType type_a = GemmType::BF16, type_b = GemmType::BF16, type_d = GemmType::BF16;
  uint32_t align_a = 256, align_b = 256, align_d = 256;  // alignment_class of each pointer

  bool operator==(const GemmPlanKey& o) const {
    return m == o.m && n == o.n && k == o.k && transa == o.transa && transb == o.transb &&
           lda == o.lda && ldb == o.ldb && ldd == o.ldd && type_a == o.type_a &&
           type_b == o.type_b && type_d == o.type_d && align_a == o.align_a &&
           align_b == o.align_b && align_d == o.align_d;
  }
};

inline GemmPlanKey make_plan_key(const ColumnMajorGemm& g) {
  GemmPlanKey key;
  key.m = g.m;
  key.n = g.n;
  key.k = g.k;
  key.transa = g.transa;
  key.transb = g.transb;
  key.lda = g.a.ld;
  key.ldb = g.b.ld;
  key.ldd = g.d.ld;
  key.type_a = g.a.type;
  key.type_b = g.b.type;
  key.type_d = g.d.type;
  key.align_a = alignment_class(g.a.data);
  key.align_b = alignment_class(g.b.data);
  key.align_d = alignment_class(g.d.data);
  return key;
}

struct GemmPlanKeyHash {
  size_t operator()(const GemmPlanKey& key) const {
    uint64_t h = 0xcbf29ce484222325ull;
    const auto mix = [&h](uint64_t v) {  // hash_combine with a 64-bit odd multiplier
      h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
      h *= 0xff51afd7ed558ccdull;
    };
    mix(uint64_t(key.m));
    mix(uint64_t(key.n));
    mix(uint64_t(key.k));
    mix(uint64_t(key.transa) | uint64_t(key.transb) << 1 | uint64_t(key.type_a) << 2 |
        uint64_t(key.type_b) << 4 | uint64_t(key.type_d) << 6);
    mix(uint64_t(key.lda));
    mix(uint64_t(key.ldb));
    mix(uint64_t(key.ldd));
    mix(uint64_t(key.align_a) | uint64_t(key.align_b) << 16 | uint64_t(key.align_d) << 32);
    return size_t(h);
  }
};

// Plans built once per key and reused. A pretraining run uses a small fixed set of shapes, but
// SFT runs every example at its own length (a new M per example), so the cache is bounded: a
// miss that finds `capacity` plans cached first drops them all (rebuilding the few live shapes
// costs one heuristic query each). Values must be movable; a returned reference stays valid
// until the next miss (node-based map; clear() and a full cache destroy values). Not
// thread-safe.
template <typename Key, typename Value, typename Hash = std::hash<Key>>
class PlanCache {
 public:
  explicit PlanCache(size_t capacity = 4096) : capacity_(capacity < 1 ? 1 : capacity) {}

  // The cached value for key, built by build() (a Value) on a miss. If build throws, nothing
  // is inserted and the counters are unchanged.
  template <typename Builder>
  Value& get_or_build(const Key& key, Builder&& build) {
    const auto it = map_.find(key);
    if (it != map_.end()) {
      ++hits_;
      return it->second;
    }
    Value value = std::forward<Builder>(build)();
    if (map_.size() >= capacity_) {
      map_.clear();
      ++flushes_;
    }
    Value& stored = map_.emplace(key, std::move(value)).first->second;
    ++built_;
    return stored;
  }
  int64_t built() const { return built_; }
  int64_t hits() const { return hits_; }
  int64_t flushes() const { return flushes_; }  // times a full cache was dropped
  size_t size() const { return map_.size(); }
  void clear() { map_.clear(); }  // destroys the values; counters are kept

 private:
  std::unordered_map<Key, Value, Hash> map_;
  size_t capacity_;
  int64_t built_ = 0, hits_ = 0, flushes_ = 0;
};

}  // namespace ll::cuda
