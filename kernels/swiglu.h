#pragma once
// The gated MLP's activation: silu(gate) * up, silu(g) = g / (1 + exp(-g)). On float32 CPU tensors
// with AVX-512F it is one pass forward and one backward, where the ATen expression runs two
// operations forward (keeping silu(gate) besides both inputs for autograd) and four backward.

#include <ATen/core/Tensor.h>

namespace grpo {

// gate and up of the same shape [..., I]; the last dimension may be a slice of a wider row (as
// gate|up from one product). Differentiable w.r.t. both; returns a new contiguous tensor.
at::Tensor swiglu(const at::Tensor& gate, const at::Tensor& up);

// The ATen expression `swiglu` must match, on every device and dtype.
at::Tensor swiglu_reference(const at::Tensor& gate, const at::Tensor& up);

// The CUDA kernel (kernels/cuda), float32 or bfloat16 CUDA tensors; `swiglu` dispatches to it when
// runs_on_cuda_kernels (kernels/cuda_kernels.h). Its test compares it with the reference per dtype.
at::Tensor swiglu_cuda(const at::Tensor& gate, const at::Tensor& up);

}  // namespace grpo
