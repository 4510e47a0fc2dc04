#pragma once
// y = x W^T + b for inference with few rows per call (a decode step: one row per sequence), with
// W packed once into panels of 32 output features laid out k-major. A BLAS repacks W on every
// call, which at 16-64 rows costs as much as the product itself (OpenBLAS: 11-15% of a decode
// step in `sgemm_incopy`); here a step streams each panel once and keeps it in cache while every
// row block reads it. float32 on CPUs with AVX-512F; elsewhere (another dtype or device, or a CPU
// without AVX-512) it computes the reference, at::linear, on the original weights.

#include <cstdint>

#include <ATen/core/Tensor.h>

namespace grpo {

// The product tile's operand layout, shared with the training linear (kernels/linear.h): b [K, N]
// (any strides; a weight [N, K] is passed as weight.t()) as panels [ceil(N / 32), K, 32] of 32
// output columns laid out k-major, zero past N. float32 CPU only (runs_on_cpu_kernels).
at::Tensor pack_panels(const at::Tensor& b);

// x [M, K] (float32, unit column stride) times the packed b, plus bias [N] (float32, contiguous)
// or undefined: [M, N]. Each output is one sum over k in order, whatever the thread count.
at::Tensor multiply_packed(const at::Tensor& x, const at::Tensor& panels, int64_t n, const at::Tensor& bias);

class PackedLinear {
 public:
  PackedLinear() = default;
  // weight [N, K], bias [N] or undefined. Copies them (packed when the fast path applies).
  PackedLinear(const at::Tensor& weight, const at::Tensor& bias);

  // x [..., K] -> [..., N], in x's dtype.
  at::Tensor operator()(const at::Tensor& x) const;

  bool defined() const { return weight_.defined() || panels_.defined(); }
  // True when calls run the packed AVX-512 kernel (not the at::linear fallback).
  bool packed() const { return panels_.defined(); }
  int64_t in_features() const { return in_; }
  int64_t out_features() const { return out_; }

  static constexpr int64_t kPanelWidth = 32;  // output features per panel (two 16-float vectors)

 private:
  int64_t in_ = 0, out_ = 0;
  at::Tensor panels_;          // [ceil(N / 32), K, 32] float32, zero past N (packed path)
  at::Tensor bias_;            // [N] or undefined (both paths)
  at::Tensor weight_;          // [N, K] (fallback path only)
};

}  // namespace grpo
