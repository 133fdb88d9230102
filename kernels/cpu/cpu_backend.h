#pragma once
// The fp32 reference backend: thin adapters from the Backend interface to kernels/cpu.
#include "kernels/backend.h"

namespace ll {

class CpuBackend final : public Backend {
 public:
  std::string name() const override { return "cpu"; }
  DType activation_dtype() const override { return DType::F32; }
  OwnedTensor allocate(std::vector<int64_t> shape, DType dtype) override;
  void upload_f32(const Tensor& dst, const float* src) override;
  void upload_i32(const Tensor& dst, const int32_t* src) override;
  void download_f32(float* dst, const Tensor& src) override;
  void embedding_forward(const Tensor& out, const Tensor& table, const Tensor& tokens) override;
  void rmsnorm_forward(const Tensor& out, const Tensor& rstd, const Tensor& x,
                       const Tensor& weight, float eps) override;
  void matmul_forward(const Tensor& out, const Tensor& x, const Tensor& w,
                      bool accumulate) override;
  void rope_forward(const Tensor& x, int64_t position_offset, double scale,
                    double theta) override;
  void attention_forward(const Tensor& out, const Tensor& lse, const Tensor& q, const Tensor& k,
                         const Tensor& v, const AttnMask& mask) override;
  void swiglu_forward(const Tensor& out, const Tensor& gate, const Tensor& up) override;
  void add_inplace(const Tensor& x, const Tensor& y) override;
  int64_t classifier_forward(const Tensor& losses, const Tensor& x, const Tensor& lm_head,
                             const Tensor& targets, int64_t chunk_rows) override;
};

}  // namespace ll
