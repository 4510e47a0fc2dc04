#pragma once
// Rotary position embedding: x * cos + rotate_half(x) * sin, rotate_half(x) = (-x2, x1) by halves
// of the head dimension. On float32 CPU tensors with AVX-512F it is one pass forward and one
// backward that also lay the heads out contiguously for attention, where the ATen expression
// runs six operations (two of them copies for rotate_half) each way. Products and sums are
// rounded as the ATen expression rounds them (no fused multiply-add), so both give the same bits.

#include <ATen/core/Tensor.h>

namespace grpo {

// x [B, N, T, D] (any strides with the last one 1; D even), cos and sin [B, T, D], the rotation
// of position t in row b. Differentiable w.r.t. x only. Returns a contiguous [B, N, T, D].
at::Tensor rotary_embedding(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

// The ATen expression `rotary_embedding` must match, on every device and dtype.
at::Tensor rotary_embedding_reference(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

// The CUDA kernel (kernels/cuda), float32 or bfloat16 CUDA tensors; `rotary_embedding` dispatches to it when
// runs_on_cuda_kernels (kernels/cuda_kernels.h). Its test compares it with the reference per dtype.
// cos and sin in x's dtype.
at::Tensor rotary_embedding_cuda(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin);

}  // namespace grpo
