// rms_norm, swiglu and rotary on CUDA: one pass each way, float32 arithmetic, rounded to the
// dtype where the ATen reference rounds (see each op's header for the math).

#include <algorithm>
#include <type_traits>

#include "kernels/cuda/common.cuh"

namespace grpo {
namespace cuda_kernels {
namespace {

constexpr int kRowThreads = 256;

template <typename T>
__global__ void rms_norm_forward_kernel(const T* x, const T* weight, T* y, float* inverse_rms, int64_t width, float eps) {
  using Reduce = cub::BlockReduce<float, kRowThreads>;
  __shared__ typename Reduce::TempStorage storage;
  __shared__ float row_r;
  const int64_t row = blockIdx.x;
  const T* in = x + row * width;
  float squares = 0;
  for (int64_t i = threadIdx.x; i < width; i += kRowThreads) {
    const float v = to_float(in[i]);
    squares += v * v;
  }
  const float total = Reduce(storage).Sum(squares);
  if (threadIdx.x == 0) {
    row_r = 1.0f / sqrtf(total / static_cast<float>(width) + eps);
    inverse_rms[row] = row_r;
  }
  __syncthreads();
  const float r = row_r;
  T* out = y + row * width;
  // weight * (normed rounded to T), as the reference multiplies in T.
  for (int64_t i = threadIdx.x; i < width; i += kRowThreads)
    out[i] = from_float<T>(to_float(weight[i]) * round_to<T>(to_float(in[i]) * r));
}

template <typename T>
__global__ void rms_norm_backward_rows_kernel(const T* x, const T* weight, const T* grad, const float* inverse_rms,
                                              T* dx, int64_t width) {
  using Reduce = cub::BlockReduce<float, kRowThreads>;
  __shared__ typename Reduce::TempStorage storage;
  __shared__ float row_mean;
  const int64_t row = blockIdx.x;
  const T *in = x + row * width, *g = grad + row * width;
  const float r = inverse_rms[row];
  float dot = 0;
  for (int64_t i = threadIdx.x; i < width; i += kRowThreads)
    dot += to_float(g[i]) * to_float(weight[i]) * (to_float(in[i]) * r);
  const float total = Reduce(storage).Sum(dot);
  if (threadIdx.x == 0) row_mean = total / static_cast<float>(width);
  __syncthreads();
  const float mean = row_mean;
  T* out = dx + row * width;
  for (int64_t i = threadIdx.x; i < width; i += kRowThreads) {
    const float xhat = to_float(in[i]) * r;
    out[i] = from_float<T>(r * (to_float(g[i]) * to_float(weight[i]) - xhat * mean));
  }
}

// weight_partials[block, column] = sum over the block's rows of g * xhat, rows in order.
template <typename T>
__global__ void rms_norm_weight_partials_kernel(const T* x, const T* grad, const float* inverse_rms,
                                                float* weight_partials, int64_t rows, int64_t width) {
  const int64_t column = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (column >= width) return;
  const int64_t blocks = ceil_div(rows, kRmsNormRowsPerPartial);
  for (int64_t block = blockIdx.y; block < blocks; block += gridDim.y) {  // gridDim.y is at most 65,535
    const int64_t first = block * kRmsNormRowsPerPartial, last = min(rows, first + kRmsNormRowsPerPartial);
    float sum = 0;
    for (int64_t row = first; row < last; ++row)
      sum += to_float(grad[row * width + column]) * (to_float(x[row * width + column]) * inverse_rms[row]);
    weight_partials[block * width + column] = sum;
  }
}

__device__ __forceinline__ float sigmoid(float g) { return 1.0f / (1.0f + expf(-g)); }

template <typename T>
__global__ void swiglu_forward_kernel(const T* gate, int64_t gate_stride, const T* up, int64_t up_stride, T* out,
                                      int64_t rows, int64_t width) {
  const int64_t count = rows * width;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = i / width, column = i % width;
    const float g = to_float(gate[row * gate_stride + column]);
    // silu(gate) rounded to T, then the product, as the reference's two operations.
    out[i] = from_float<T>(round_to<T>(g * sigmoid(g)) * to_float(up[row * up_stride + column]));
  }
}

// d gate = dy * up * s * (1 + g (1 - s)), d up = dy * g * s, s = sigmoid(g).
template <typename T>
__global__ void swiglu_backward_kernel(const T* gate, int64_t gate_stride, const T* up, int64_t up_stride,
                                       const T* grad, T* d_gate, T* d_up, int64_t rows, int64_t width) {
  const int64_t count = rows * width;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = i / width, column = i % width;
    const float g = to_float(gate[row * gate_stride + column]), u = to_float(up[row * up_stride + column]);
    const float dy = to_float(grad[i]), s = sigmoid(g);
    d_gate[i] = from_float<T>(dy * u * (s * (1.0f + g * (1.0f - s))));
    d_up[i] = from_float<T>(dy * (g * s));
  }
}

// One element pair (i, i + D/2) of a head's row per thread. Products and sums rounded separately
// (no contraction into a multiply-add) and to T between operations, as the reference's.
template <typename T>
__global__ void rotary_kernel(const T* x, RotaryShape shape, const T* cos, const T* sin, T* out, bool inverse) {
  const int64_t half = shape.dim / 2;
  const int64_t count = shape.batch * shape.heads * shape.length * half;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t column = i % half, row = i / half;  // row over [B, N, T]
    const int64_t t = row % shape.length, n = row / shape.length % shape.heads, b = row / (shape.length * shape.heads);
    const T* in = x + b * shape.stride_batch + n * shape.stride_head + t * shape.stride_position;
    const int64_t position = (b * shape.length + t) * shape.dim;
    const float x1 = to_float(in[column]), x2 = to_float(in[column + half]);
    const float c1 = to_float(cos[position + column]), c2 = to_float(cos[position + column + half]);
    const float s1 = to_float(sin[position + column]), s2 = to_float(sin[position + column + half]);
    float y1, y2;
    if (!inverse) {  // y1 = x1 c1 + (-x2) s1, y2 = x2 c2 + x1 s2
      y1 = __fadd_rn(round_to<T>(__fmul_rn(x1, c1)), round_to<T>(__fmul_rn(-x2, s1)));
      y2 = __fadd_rn(round_to<T>(__fmul_rn(x2, c2)), round_to<T>(__fmul_rn(x1, s2)));
    } else {  // dx1 = dy1 c1 + dy2 s2, dx2 = dy2 c2 + (-dy1) s1
      y1 = __fadd_rn(round_to<T>(__fmul_rn(x1, c1)), round_to<T>(__fmul_rn(x2, s2)));
      y2 = __fadd_rn(round_to<T>(__fmul_rn(x2, c2)), round_to<T>(__fmul_rn(-x1, s1)));
    }
    T* o = out + row * shape.dim;
    o[column] = from_float<T>(y1);
    o[column + half] = from_float<T>(y2);
  }
}

// Blocks for a grid-stride loop over `count` elements: enough to fill the device, no more.
unsigned elementwise_blocks(int64_t count) {
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(ceil_div(count, 256), 8192)));
}

}  // namespace

int rms_norm_forward(Dtype dtype, const void* x, const void* weight, void* y, float* inverse_rms, int64_t rows,
                     int64_t width, float eps, void* stream) {
  if (rows == 0) return 0;
  auto launch = [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    GRPO_LAUNCH(rms_norm_forward_kernel<T>, static_cast<unsigned>(rows), kRowThreads, stream)(
        static_cast<const T*>(x), static_cast<const T*>(weight), static_cast<T*>(y), inverse_rms, width, eps);
    return launched();
  };
  return GRPO_CUDA_DISPATCH(dtype, launch);
}

int rms_norm_backward(Dtype dtype, const void* x, const void* weight, const void* grad, const float* inverse_rms,
                      void* dx, float* weight_partials, int64_t rows, int64_t width, void* stream) {
  if (rows == 0) return 0;
  auto launch = [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    GRPO_LAUNCH(rms_norm_backward_rows_kernel<T>, static_cast<unsigned>(rows), kRowThreads, stream)(
        static_cast<const T*>(x), static_cast<const T*>(weight), static_cast<const T*>(grad), inverse_rms,
        static_cast<T*>(dx), width);
    if (const int error = launched()) return error;
    const dim3 grid(static_cast<unsigned>(ceil_div(width, 256)),
                    static_cast<unsigned>(std::min<int64_t>(ceil_div(rows, kRmsNormRowsPerPartial), 65535)));
    GRPO_LAUNCH(rms_norm_weight_partials_kernel<T>, grid, 256, stream)(
        static_cast<const T*>(x), static_cast<const T*>(grad), inverse_rms, weight_partials, rows, width);
    return launched();
  };
  return GRPO_CUDA_DISPATCH(dtype, launch);
}

int swiglu_forward(Dtype dtype, const void* gate, int64_t gate_stride, const void* up, int64_t up_stride, void* out,
                   int64_t rows, int64_t width, void* stream) {
  if (rows * width == 0) return 0;
  auto launch = [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    GRPO_LAUNCH(swiglu_forward_kernel<T>, elementwise_blocks(rows * width), 256, stream)(
        static_cast<const T*>(gate), gate_stride, static_cast<const T*>(up), up_stride, static_cast<T*>(out), rows, width);
    return launched();
  };
  return GRPO_CUDA_DISPATCH(dtype, launch);
}

int swiglu_backward(Dtype dtype, const void* gate, int64_t gate_stride, const void* up, int64_t up_stride,
                    const void* grad, void* d_gate, void* d_up, int64_t rows, int64_t width, void* stream) {
  if (rows * width == 0) return 0;
  auto launch = [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    GRPO_LAUNCH(swiglu_backward_kernel<T>, elementwise_blocks(rows * width), 256, stream)(
        static_cast<const T*>(gate), gate_stride, static_cast<const T*>(up), up_stride, static_cast<const T*>(grad),
        static_cast<T*>(d_gate), static_cast<T*>(d_up), rows, width);
    return launched();
  };
  return GRPO_CUDA_DISPATCH(dtype, launch);
}

int rotary(Dtype dtype, const void* x, const RotaryShape& shape, const void* cos, const void* sin, void* out,
           bool inverse, void* stream) {
  const int64_t pairs = shape.batch * shape.heads * shape.length * (shape.dim / 2);
  if (pairs == 0) return 0;
  auto launch = [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    GRPO_LAUNCH(rotary_kernel<T>, elementwise_blocks(pairs), 256, stream)(
        static_cast<const T*>(x), shape, static_cast<const T*>(cos), static_cast<const T*>(sin), static_cast<T*>(out),
        inverse);
    return launched();
  };
  return GRPO_CUDA_DISPATCH(dtype, launch);
}

}  // namespace cuda_kernels
}  // namespace grpo
