#pragma once
#include <cstdint>

namespace ll::cpu {

// out[M, Nout] = x[M, K] @ w[Nout, K]^T  (+ out when accumulate). Linear layers in HF layout.
void matmul_forward(float* out, const float* x, const float* w, int64_t m, int64_t k, int64_t n_out,
                    bool accumulate);

// out[M, Nout] = alpha * x[M, K] @ w[Nout, K]^T (+ out when accumulate).
void matmul_forward_scaled(float* out, const float* x, const float* w, int64_t m, int64_t k,
                           int64_t n_out, float alpha, bool accumulate);

// Gradients of out = alpha * x @ w^T.
// dx[M, K] (+)= alpha * dout[M, Nout] @ w[Nout, K]
void matmul_backward_input(float* dx, const float* dout, const float* w, int64_t m, int64_t k,
                           int64_t n_out, float alpha, bool accumulate);
// dw[Nout, K] (+)= alpha * dout[M, Nout]^T @ x[M, K]
void matmul_backward_weight(float* dw, const float* dout, const float* x, int64_t m, int64_t k,
                            int64_t n_out, float alpha, bool accumulate);

}  // namespace ll::cpu
