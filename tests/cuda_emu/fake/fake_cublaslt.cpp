// A host stand-in for the cuBLASLt calls of kernels/cuda/gemm.cpp, for the emulated CUDA build
// (LL_CUDA_BACKEND_EMULATED): D = alpha op(A) op(B) + beta C, column-major layouts of bf16 or fp32,
// transposes, fp32 compute and scale, C and D with the same layout; no batches, epilogues or
// other attributes (asked for, they fail with CUBLAS_STATUS_NOT_SUPPORTED, as a missing
// feature should). Written from the cuBLASLt documentation's definition of the operation. A
// matmul runs at once, after the work its (lazy, fake_cuda_runtime.h) stream has queued.
#include <cublasLt.h>

#include "tests/cuda_emu/fake/fake_cuda_runtime.h"

#include <cstring>
#include <vector>

namespace {

struct Desc {
  cublasComputeType_t compute;
  cudaDataType_t scale;
  int32_t transa = CUBLAS_OP_N, transb = CUBLAS_OP_N;
};
struct Layout {
  cudaDataType type;
  uint64_t rows, cols;
  int64_t ld;
};

float load(const void* p, cudaDataType t, size_t i) {
  if (t == CUDA_R_32F) return static_cast<const float*>(p)[i];
  uint16_t b;
  std::memcpy(&b, static_cast<const char*>(p) + 2 * i, 2);
  const uint32_t u = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
void store(void* p, cudaDataType t, size_t i, float v) {
  if (t == CUDA_R_32F) {
    static_cast<float*>(p)[i] = v;
    return;
  }
  uint32_t u;
  std::memcpy(&u, &v, 4);
  uint16_t b;
  if ((u & 0x7fffffffu) > 0x7f800000u)
    b = uint16_t((u >> 16) | 0x40u);  // quiet NaN
  else
    b = uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);  // round to nearest even
  std::memcpy(static_cast<char*>(p) + 2 * i, &b, 2);
}
bool supported(cudaDataType t) { return t == CUDA_R_32F || t == CUDA_R_16BF; }

}  // namespace

extern "C" {

cublasStatus_t CUBLASWINAPI cublasLtCreate(cublasLtHandle_t* handle) {
  if (handle == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  static int token;
  *handle = reinterpret_cast<cublasLtHandle_t>(&token);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t CUBLASWINAPI cublasLtDestroy(cublasLtHandle_t) { return CUBLAS_STATUS_SUCCESS; }

cublasStatus_t CUBLASWINAPI cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* desc,
                                                     cublasComputeType_t compute,
                                                     cudaDataType_t scale) {
  if (desc == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  if (compute != CUBLAS_COMPUTE_32F || scale != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
  *desc = reinterpret_cast<cublasLtMatmulDesc_t>(new Desc{compute, scale});
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t CUBLASWINAPI cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t desc) {
  delete reinterpret_cast<Desc*>(desc);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t CUBLASWINAPI cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc,
                                                           cublasLtMatmulDescAttributes_t attr,
                                                           const void* buf, size_t bytes) {
  if (desc == nullptr || buf == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  Desc* d = reinterpret_cast<Desc*>(desc);
  if (attr != CUBLASLT_MATMUL_DESC_TRANSA && attr != CUBLASLT_MATMUL_DESC_TRANSB)
    return CUBLAS_STATUS_NOT_SUPPORTED;
  if (bytes != sizeof(int32_t)) return CUBLAS_STATUS_INVALID_VALUE;
  int32_t v;
  std::memcpy(&v, buf, 4);
  if (v != CUBLAS_OP_N && v != CUBLAS_OP_T) return CUBLAS_STATUS_NOT_SUPPORTED;
  (attr == CUBLASLT_MATMUL_DESC_TRANSA ? d->transa : d->transb) = v;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* layout,
                                                       cudaDataType type, uint64_t rows,
                                                       uint64_t cols, int64_t ld) {
  if (layout == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  if (!supported(type)) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (ld < int64_t(rows > 0 ? rows : 1)) return CUBLAS_STATUS_INVALID_VALUE;
  *layout = reinterpret_cast<cublasLtMatrixLayout_t>(new Layout{type, rows, cols, ld});
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t CUBLASWINAPI cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t layout) {
  delete reinterpret_cast<Layout*>(layout);
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* pref) {
  if (pref == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
  *pref = reinterpret_cast<cublasLtMatmulPreference_t>(new int(0));
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t CUBLASWINAPI cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref) {
  delete reinterpret_cast<int*>(pref);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t CUBLASWINAPI cublasLtMatmulPreferenceSetAttribute(
    cublasLtMatmulPreference_t pref, cublasLtMatmulPreferenceAttributes_t, const void* buf,
    size_t) {
  return pref == nullptr || buf == nullptr ? CUBLAS_STATUS_INVALID_VALUE : CUBLAS_STATUS_SUCCESS;
}

// Shapes must agree: op(A) m x k, op(B) k x n, C and D m x n.
cublasStatus_t CUBLASWINAPI cublasLtMatmulAlgoGetHeuristic(
    cublasLtHandle_t, cublasLtMatmulDesc_t desc, cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
    cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d, cublasLtMatmulPreference_t, int requested,
    cublasLtMatmulHeuristicResult_t results[], int* returned) {
  if (desc == nullptr || a == nullptr || b == nullptr || c == nullptr || d == nullptr ||
      returned == nullptr || (requested > 0 && results == nullptr))
    return CUBLAS_STATUS_INVALID_VALUE;
  const Desc& ds = *reinterpret_cast<Desc*>(desc);
  const Layout &la = *reinterpret_cast<Layout*>(a), &lb = *reinterpret_cast<Layout*>(b),
               &lc = *reinterpret_cast<Layout*>(c), &ld = *reinterpret_cast<Layout*>(d);
  const uint64_t m = ld.rows, n = ld.cols;
  const uint64_t am = ds.transa == CUBLAS_OP_N ? la.rows : la.cols;
  const uint64_t ak = ds.transa == CUBLAS_OP_N ? la.cols : la.rows;
  const uint64_t bk = ds.transb == CUBLAS_OP_N ? lb.rows : lb.cols;
  const uint64_t bn = ds.transb == CUBLAS_OP_N ? lb.cols : lb.rows;
  if (am != m || bn != n || ak != bk || lc.rows != m || lc.cols != n)
    return CUBLAS_STATUS_INVALID_VALUE;
  *returned = 0;
  if (requested < 1) return CUBLAS_STATUS_SUCCESS;
  results[0] = cublasLtMatmulHeuristicResult_t{};
  results[0].state = CUBLAS_STATUS_SUCCESS;
  results[0].wavesCount = 1.0f;
  *returned = 1;
  return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t CUBLASWINAPI cublasLtMatmul(
    cublasLtHandle_t, cublasLtMatmulDesc_t desc, const void* alpha, const void* a,
    cublasLtMatrixLayout_t adesc, const void* b, cublasLtMatrixLayout_t bdesc, const void* beta,
    const void* c, cublasLtMatrixLayout_t cdesc, void* d, cublasLtMatrixLayout_t ddesc,
    const cublasLtMatmulAlgo_t*, void*, size_t, cudaStream_t stream) {
  if (ll_emu_run_stream(stream) != cudaSuccess) return CUBLAS_STATUS_INVALID_VALUE;
  if (desc == nullptr || alpha == nullptr || beta == nullptr || adesc == nullptr ||
      bdesc == nullptr || cdesc == nullptr || ddesc == nullptr)
    return CUBLAS_STATUS_INVALID_VALUE;
  const Desc& ds = *reinterpret_cast<Desc*>(desc);
  const Layout &la = *reinterpret_cast<Layout*>(adesc), &lb = *reinterpret_cast<Layout*>(bdesc),
               &lc = *reinterpret_cast<Layout*>(cdesc), &ld = *reinterpret_cast<Layout*>(ddesc);
  const uint64_t m = ld.rows, n = ld.cols;
  const uint64_t k = ds.transa == CUBLAS_OP_N ? la.cols : la.rows;
  const float al = *static_cast<const float*>(alpha), be = *static_cast<const float*>(beta);
  std::vector<float> col(k);
  for (uint64_t j = 0; j < n; ++j) {
    for (uint64_t p = 0; p < k; ++p)  // column j of op(B)
      col[p] = load(b, lb.type, ds.transb == CUBLAS_OP_N ? p + j * lb.ld : j + p * lb.ld);
    for (uint64_t i = 0; i < m; ++i) {
      float acc = 0.0f;
      for (uint64_t p = 0; p < k; ++p)
        acc += load(a, la.type, ds.transa == CUBLAS_OP_N ? i + p * la.ld : p + i * la.ld) * col[p];
      // beta == 0: C is not read (it may hold NaN), as cuBLASLt documents.
      const float cv = be == 0.0f ? 0.0f : be * load(c, lc.type, i + j * lc.ld);
      store(d, ld.type, i + j * ld.ld, al * acc + cv);
    }
  }
  return CUBLAS_STATUS_SUCCESS;
}

const char* CUBLASWINAPI cublasLtGetStatusName(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS:
      return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_INVALID_VALUE:
      return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_NOT_SUPPORTED:
      return "CUBLAS_STATUS_NOT_SUPPORTED";
    default:
      return "CUBLAS_STATUS (emulated cuBLASLt)";
  }
}
const char* CUBLASWINAPI cublasLtGetStatusString(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS:
      return "success";
    case CUBLAS_STATUS_INVALID_VALUE:
      return "an invalid value was used as an argument";
    case CUBLAS_STATUS_NOT_SUPPORTED:
      return "not supported by the emulated cuBLASLt";
    default:
      return "error (emulated cuBLASLt)";
  }
}

}  // extern "C"
