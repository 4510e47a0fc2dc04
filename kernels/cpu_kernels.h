#pragma once
// Where the CPU kernels of kernels/ (packed_linear, decode_attention, token_sampling) run: float32
// tensors on a CPU whose AVX-512F the OS enables. One home for the test that the kernels, the
// decoder's inference path and the rollout engine all make.

#include <ATen/core/Tensor.h>

namespace grpo {

// This CPU runs the kernels' AVX-512F code (probed once).
bool avx512_kernels_supported();

// `t` is a float32 CPU tensor and avx512_kernels_supported().
bool runs_on_cpu_kernels(const at::Tensor& t);

}  // namespace grpo
