// cuBLASLt GEMMs: the row-major call is mapped to column-major (gemm_plan.h), the matmul
// descriptor, layouts and the heuristic's algorithm are built once per GemmPlanKey and reused.
#include "kernels/cuda/gemm.h"

#include <cublasLt.h>

#include <string>
#include <utility>

#include "common/error.h"
#include "kernels/cuda/cuda_check.h"

// Every cuBLASLt call: a failure becomes an ll::Error naming file:line, the call and the status.
#define LL_CUBLASLT_CHECK(call)                                                                 \
  do {                                                                                          \
    const cublasStatus_t ll_lt_status_ = (call);                                                \
    if (ll_lt_status_ != CUBLAS_STATUS_SUCCESS)                                                 \
      ::ll::fail("{}:{}: {} failed: {} ({})", __FILE__, __LINE__, #call,                        \
                 cublasLtGetStatusName(ll_lt_status_), cublasLtGetStatusString(ll_lt_status_)); \
  } while (0)

namespace ll::cuda {
namespace {

cudaDataType_t cuda_type(GemmType t) { return t == GemmType::BF16 ? CUDA_R_16BF : CUDA_R_32F; }

std::string describe(const ColumnMajorGemm& g) {
  return fmt::format(
      "row-major D[{}, {}] ({}, ld {}) = op(A)[{}, {}] @ op(B)[{}, {}] (trans_a {}, trans_b {}, "
      "lda {}, ldb {}, alignments A {} B {} D {} bytes)",
      g.n, g.m, gemm_type_name(g.d.type), g.d.ld, g.n, g.k, g.k, g.m, g.transb, g.transa, g.b.ld,
      g.a.ld, alignment_class(g.b.data), alignment_class(g.a.data), alignment_class(g.d.data));
}

// Owns the cuBLASLt objects of one plan. C and D share one layout (C is D).
struct LtPlan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
  cublasLtMatmulAlgo_t algo{};

  LtPlan() = default;
  LtPlan(LtPlan&& o) noexcept
      : desc(std::exchange(o.desc, nullptr)),
        a(std::exchange(o.a, nullptr)),
        b(std::exchange(o.b, nullptr)),
        d(std::exchange(o.d, nullptr)),
        algo(o.algo) {}
  LtPlan(const LtPlan&) = delete;
  LtPlan& operator=(const LtPlan&) = delete;
  LtPlan& operator=(LtPlan&&) = delete;
  ~LtPlan() {  // destructors do not throw: statuses ignored
    if (d != nullptr) (void)cublasLtMatrixLayoutDestroy(d);
    if (b != nullptr) (void)cublasLtMatrixLayoutDestroy(b);
    if (a != nullptr) (void)cublasLtMatrixLayoutDestroy(a);
    if (desc != nullptr) (void)cublasLtMatmulDescDestroy(desc);
  }
};

struct LtPreference {  // RAII for the heuristic's preference, needed only while planning
  cublasLtMatmulPreference_t pref = nullptr;
  LtPreference() { LL_CUBLASLT_CHECK(cublasLtMatmulPreferenceCreate(&pref)); }
  LtPreference(const LtPreference&) = delete;
  LtPreference& operator=(const LtPreference&) = delete;
  ~LtPreference() { (void)cublasLtMatmulPreferenceDestroy(pref); }
  void set(cublasLtMatmulPreferenceAttributes_t attr, uint32_t v) {
    LL_CUBLASLT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, attr, &v, sizeof(v)));
  }
  void set(cublasLtMatmulPreferenceAttributes_t attr, uint64_t v) {
    LL_CUBLASLT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref, attr, &v, sizeof(v)));
  }
};

cublasLtMatrixLayout_t make_layout(const LtLayout& l) {
  cublasLtMatrixLayout_t layout = nullptr;
  LL_CUBLASLT_CHECK(cublasLtMatrixLayoutCreate(&layout, cuda_type(l.type), uint64_t(l.rows),
                                               uint64_t(l.cols), l.ld));
  return layout;
}

LtPlan build_plan(cublasLtHandle_t handle, const ColumnMajorGemm& g, const GemmPlanKey& key,
                  size_t workspace_bytes) {
  LtPlan plan;  // destroys whatever was created if a later step throws
  LL_CUBLASLT_CHECK(cublasLtMatmulDescCreate(&plan.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const int32_t transa = g.transa ? CUBLAS_OP_T : CUBLAS_OP_N;
  const int32_t transb = g.transb ? CUBLAS_OP_T : CUBLAS_OP_N;
  LL_CUBLASLT_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_TRANSA, &transa,
                                                   sizeof(transa)));
  LL_CUBLASLT_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_TRANSB, &transb,
                                                   sizeof(transb)));
  plan.a = make_layout(g.a);
  plan.b = make_layout(g.b);
  plan.d = make_layout(g.d);

  LtPreference pref;
  pref.set(CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, uint64_t(workspace_bytes));
  pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, key.align_a);
  pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, key.align_b);
  pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, key.align_d);
  pref.set(CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, key.align_d);

  cublasLtMatmulHeuristicResult_t result{};
  int returned = 0;
  const cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(
      handle, plan.desc, plan.a, plan.b, plan.d, plan.d, pref.pref, 1, &result, &returned);
  // NOT_SUPPORTED is how cuBLASLt says "no algorithm for this configuration".
  if (status == CUBLAS_STATUS_NOT_SUPPORTED || (status == CUBLAS_STATUS_SUCCESS && returned == 0))
    ::ll::fail("gemm: cuBLASLt has no algorithm for {} with a {}-byte workspace", describe(g),
               workspace_bytes);
  LL_CUBLASLT_CHECK(status);
  LL_CUBLASLT_CHECK(result.state);
  plan.algo = result.algo;
  return plan;
}

}  // namespace

struct GemmRunner::Impl {
  cublasLtHandle_t handle = nullptr;
  void* workspace = nullptr;  // [workspace_bytes] device bytes, caller-owned
  size_t workspace_bytes = 0;
  cudaStream_t stream = nullptr;
  PlanCache<GemmPlanKey, LtPlan, GemmPlanKeyHash> plans;

  ~Impl() {
    plans.clear();  // plans before the handle they were made with
    if (handle != nullptr) (void)cublasLtDestroy(handle);
  }
};

GemmRunner::GemmRunner(void* workspace, size_t workspace_bytes, cudaStream_t stream)
    : impl_(std::make_unique<Impl>()) {
  LL_CHECK(workspace_bytes == 0 || (workspace != nullptr && alignment_class(workspace) == 256),
           "gemm: the cuBLASLt workspace ({} bytes at {}) must be non-null and 256-byte aligned",
           workspace_bytes, workspace);
  impl_->workspace = workspace;
  impl_->workspace_bytes = workspace_bytes;
  impl_->stream = stream;
  LL_CUBLASLT_CHECK(cublasLtCreate(&impl_->handle));
}

GemmRunner::~GemmRunner() = default;

void GemmRunner::run(const GemmMatrix& d, const GemmMatrix& a, bool trans_a, const GemmMatrix& b,
                     bool trans_b, float alpha, float beta) {
  const ColumnMajorGemm g = to_column_major(d, a, trans_a, b, trans_b);  // validates
  if (g.m == 0 || g.n == 0) return;
  void* d_data = const_cast<void*>(d.data);  // [M, ld] row-major, written
  if (g.k == 0) {                            // D = beta * D without cuBLASLt
    if (beta == 1.0f) return;
    LL_CHECK(beta == 0.0f, "gemm: K == 0 with beta {} (only 0 or 1 are supported): {}", beta,
             describe(g));
    const size_t es = size_t(gemm_type_bytes(d.type));
    LL_CUDA_CHECK(cudaMemset2DAsync(d_data, size_t(d.ld) * es, 0, size_t(d.cols) * es,
                                    size_t(d.rows), impl_->stream));
    return;
  }
  const GemmPlanKey key = make_plan_key(g);
  const LtPlan& plan = impl_->plans.get_or_build(
      key, [&] { return build_plan(impl_->handle, g, key, impl_->workspace_bytes); });
  // C is D: read only when beta != 0.
  LL_CUBLASLT_CHECK(cublasLtMatmul(impl_->handle, plan.desc, &alpha, g.a.data, plan.a, g.b.data,
                                   plan.b, &beta, d_data, plan.d, d_data, plan.d, &plan.algo,
                                   impl_->workspace, impl_->workspace_bytes, impl_->stream));
}

int64_t GemmRunner::plans_built() const { return impl_->plans.built(); }
int64_t GemmRunner::plan_hits() const { return impl_->plans.hits(); }

}  // namespace ll::cuda
