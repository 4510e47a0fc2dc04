#pragma once
// Where the CUDA kernels of kernels/cuda run: float32 or bfloat16 CUDA tensors, in a build that
// compiled them (a CUDA compiler was found), when GRPO_CUDA_KERNELS=1. They are off by default
// until they have run on a GPU (docs/models.md, "Kernels"): the `_cuda` functions beside each op
// (rms_norm_cuda, swiglu_cuda, rotary_embedding_cuda, decode_attention_cuda, draw_tokens_cuda) can
// be called directly either way, which is what their tests do.

#include <string>

#include <ATen/core/Tensor.h>

namespace grpo {

// This build compiled kernels/cuda.
bool cuda_kernels_built();

// GRPO_CUDA_KERNELS is 1 (read once) and this build compiled them.
bool cuda_kernels_enabled();

// Why GRPO_CUDA_KERNELS cannot be read (a value other than unset, 0 or 1), or "" when it can: the
// command line refuses such a value before any work rather than run with the kernels silently off.
std::string cuda_kernels_setting_problem();

// `t` is a float32 or bfloat16 CUDA tensor and cuda_kernels_enabled().
bool runs_on_cuda_kernels(const at::Tensor& t);

// The inputs of one op: `t` runs on the kernels and the others share its dtype and device.
template <typename... Others>
bool runs_on_cuda_kernels(const at::Tensor& t, const Others&... others) {
  return runs_on_cuda_kernels(t) && ((others.scalar_type() == t.scalar_type() && others.device() == t.device()) && ...);
}

}  // namespace grpo
