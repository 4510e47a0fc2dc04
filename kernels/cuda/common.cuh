#pragma once
// Shared by the .cu files of kernels/cuda: element loads and stores in float32 arithmetic, the
// launch macro and the dtype switch of the launch functions (kernels/cuda/launch.h).
// With GRPO_CUDA_EMULATION the same sources compile as C++ against a CPU emulation of the CUDA
// execution model (tests/kernels/cuda_emulation.h), which runs the kernels' logic in CI.

#ifdef GRPO_CUDA_EMULATION
#include "tests/kernels/cuda_emulation.h"
#else
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
// GRPO_LAUNCH(kernel, grid, block, stream)(arguments...): kernel<<<grid, block, 0, stream>>>.
#define GRPO_LAUNCH(kernel, grid, block, stream) kernel<<<(grid), (block), 0, as_stream(stream)>>>
#endif

#include "kernels/cuda/launch.h"

namespace grpo {
namespace cuda_kernels {

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// x rounded to T and back: the rounding an ATen expression applies between its operations.
template <typename T>
__device__ __forceinline__ float round_to(float x) { return to_float(from_float<T>(x)); }

// x / T, the tempered logit (or its gradient's factor); no division at T = 1, as the references.
__device__ __forceinline__ float tempered(float x, float temperature) { return temperature == 1.0f ? x : x / temperature; }

inline cudaStream_t as_stream(void* stream) { return static_cast<cudaStream_t>(stream); }

// The launch's result: an error in its arguments, or the launch error.
inline int launched() { return static_cast<int>(cudaGetLastError()); }

__host__ __device__ inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace cuda_kernels
}  // namespace grpo

// Calls `launch` (a generic lambda taking a T* tag) with T = float or __nv_bfloat16.
#define GRPO_CUDA_DISPATCH(dtype, launch)                                      \
  ((dtype) == ::grpo::cuda_kernels::Dtype::kFloat32 ? launch(static_cast<float*>(nullptr)) \
                                                    : launch(static_cast<__nv_bfloat16*>(nullptr)))
