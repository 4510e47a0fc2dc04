#pragma once
// RMSNorm over the last dimension: y = weight * (x / sqrt(mean(x^2) + eps)), statistics in
// float32 whatever the dtype (as HF). On float32 CPU tensors with AVX-512F it is one pass forward
// and one backward (saving x and one inverse RMS per row), where the ATen expression runs five
// operations forward, keeps four tensors of x's size for autograd, and ten more backward.

#include <ATen/core/Tensor.h>

namespace grpo {

// x [..., H], weight [H]; differentiable w.r.t. both. Each row is computed alone, so a row's
// result does not depend on the batch around it.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& weight, double eps);

// The ATen expression `rms_norm` must match, on every device and dtype.
at::Tensor rms_norm_reference(const at::Tensor& x, const at::Tensor& weight, double eps);

// The CUDA kernel (kernels/cuda), float32 or bfloat16 CUDA tensors; `rms_norm` dispatches to it when
// runs_on_cuda_kernels (kernels/cuda_kernels.h). Its test compares it with the reference per dtype.
at::Tensor rms_norm_cuda(const at::Tensor& x, const at::Tensor& weight, double eps);

}  // namespace grpo
