#pragma once
// y = x W^T + b for training. On float32 CPU tensors with AVX-512F the forward product and the
// input gradient dY W run on the packed product tile (kernels/packed_linear.h): the weight is
// packed per call (K x N floats, ~1% of the product's time at the decoder's shapes), the
// activations are read in place by row blocks, and the output is written once. The weight
// gradient dY^T x, a reduction over all rows, runs on one-block attention's tile
// (kernels/product_tile.h), which reads both in place.
// OpenBLAS, which at::linear calls, packs the activations too and clears the output before
// accumulating: on the demo's training shapes ([10240, 256] x [256, 128..688] and down_proj's
// [10240, 688] x [688, 256]) it ran 97-150 GFLOP/s against 175-206 for the tile (bench_gemm).

#include <ATen/core/Tensor.h>

namespace grpo {

// x [..., K], weight [N, K], bias [N] or undefined -> [..., N]; differentiable w.r.t. all three.
// Each element of y, dx and dW is one sum in a fixed order, so their bits do not depend on the
// thread count; nor do a row's y and dx on the rows batched with it (dW sums over all rows).
at::Tensor linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias);

// The ATen expression `linear` must match, on every device and dtype.
at::Tensor linear_reference(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias);

}  // namespace grpo
