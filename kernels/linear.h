#pragma once
// y = x W^T + b for training. On float32 CPU tensors with AVX-512F the forward product and the
// input gradient dY W run on the packed product tile (kernels/packed_linear.h): the weight is
// packed per call (K x N floats, ~1% of the product's time at the decoder's shapes), the
// activations are read in place by row blocks, and the output is written once. OpenBLAS, which
// at::linear calls, packs the activations too and clears the output before accumulating: on the
// demo's training shapes ([10240, 256] x [256, 128..1376]) that ran at 105-188 GFLOP/s against
// 175-213 for the tile. The weight gradient dY^T x (a reduction over all rows) stays with the BLAS.

#include <ATen/core/Tensor.h>

namespace grpo {

// x [..., K], weight [N, K], bias [N] or undefined -> [..., N]; differentiable w.r.t. all three.
// Each element of y and of dx is one sum in a fixed order: their bits do not depend on the thread
// count, nor a row's on the rows batched with it (the BLAS's dW promises neither).
at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias);

// The ATen expression `linear` must match, on every device and dtype.
at::Tensor linear_reference(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias);

}  // namespace grpo
