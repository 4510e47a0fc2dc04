// A chunk's token statistics for token_logprobs on CUDA (kernels/token_logprobs.h): one block per
// token row of the head's logits z, in the logits' dtype as the product left them. Forward reads the
// row once: a running (max m, sum s = sum e^(y - m), weighted t = sum e^(y - m) y) per thread over
// y = z / T, merged across the block; then logsumexp = m + log s, the target's log-prob y_t - lse
// and the entropy lse - t / s. Backward writes the logits' gradient in one pass from the saved
// logsumexp and entropy: dz = (-p (g + g_H (log p + H)) + [j = t] g) / T. The ATen chain these
// replace makes about eight passes over a float32 copy of the chunk.

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "kernels/cuda/common.cuh"

namespace grpo {
namespace cuda_kernels {
namespace {

constexpr int kThreads = 256;

// The sums in float64: the entropy lse - t / s subtracts two numbers of the logits' size, and
// float32 sums over 152k terms left errors near 3e-5 in it (the emulation test caught it).
struct Running {
  float max;               // m
  double sum, weighted;    // s = sum e^(y - m), t = sum e^(y - m) y
};

__device__ __forceinline__ Running add(Running r, float y) {
  if (y == -INFINITY) return r;  // probability 0: contributes nothing (and 0 * -inf would be NaN)
  if (y > r.max) {
    const double shrink = r.max == -INFINITY ? 0.0 : static_cast<double>(expf(r.max - y));
    return {y, r.sum * shrink + 1.0, r.weighted * shrink + y};
  }
  const double e = expf(y - r.max);
  return {r.max, r.sum + e, r.weighted + e * y};
}

struct Merge {
  __device__ Running operator()(const Running& a, const Running& b) const {
    const float max = fmaxf(a.max, b.max);
    if (max == -INFINITY) return a;
    const double wa = a.max == -INFINITY ? 0.0 : static_cast<double>(expf(a.max - max));
    const double wb = b.max == -INFINITY ? 0.0 : static_cast<double>(expf(b.max - max));
    return {max, a.sum * wa + b.sum * wb, a.weighted * wa + b.weighted * wb};
  }
};

template <typename T>
__global__ void __launch_bounds__(kThreads) token_statistics_kernel(const T* logits, int64_t vocab, float temperature,
                                                                    const int64_t* targets, float* logsumexp,
                                                                    float* logprobs, float* entropy) {
  __shared__ typename cub::BlockReduce<Running, kThreads>::TempStorage storage;
  const int64_t row = blockIdx.x;
  const T* z = logits + row * vocab;
  Running r{-INFINITY, 0.0, 0.0};
  for (int64_t j = threadIdx.x; j < vocab; j += kThreads) {
    r = add(r, tempered(to_float(z[j]), temperature));
  }
  const Running total = cub::BlockReduce<Running, kThreads>(storage).Reduce(r, Merge{});
  if (threadIdx.x == 0) {
    const double lse = static_cast<double>(total.max) + log(total.sum);
    const int64_t target = targets[row];
    const float y_target = tempered(to_float(z[target]), temperature);
    logsumexp[row] = static_cast<float>(lse);
    logprobs[row] = static_cast<float>(static_cast<double>(y_target) - lse);
    entropy[row] = static_cast<float>(lse - total.weighted / total.sum);
  }
}

template <typename T>
__global__ void token_logit_gradients_kernel(const T* logits, int64_t rows, int64_t vocab, float temperature,
                                             const int64_t* targets, const float* logsumexp, const float* entropy,
                                             const float* grad_logprobs, const float* grad_entropy,
                                             float* grad_logits) {
  for (int64_t row = blockIdx.y; row < rows; row += gridDim.y) {  // gridDim.y is at most 65,535
    const T* z = logits + row * vocab;
    float* dz = grad_logits + row * vocab;
    const float lse = logsumexp[row], g = grad_logprobs[row];
    const float g_entropy = grad_entropy == nullptr ? 0.0f : grad_entropy[row];
    const float h = entropy[row];
    const int64_t target = targets[row];
    for (int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; j < vocab;
         j += static_cast<int64_t>(gridDim.x) * blockDim.x) {
      const float y = tempered(to_float(z[j]), temperature);
      const float log_p = y - lse, p = expf(log_p);
      float d = -(p * (grad_entropy == nullptr ? g : g + g_entropy * (log_p + h)));
      if (j == target) d += g;
      dz[j] = tempered(d, temperature);
    }
  }
}

}  // namespace

int token_statistics(Dtype dtype, const void* logits, int64_t rows, int64_t vocab, float temperature,
                     const int64_t* targets, float* logsumexp, float* logprobs, float* entropy, void* stream) {
  if (rows == 0) return 0;
  if (vocab <= 0 || !(temperature > 0.0f)) return static_cast<int>(cudaErrorInvalidValue);
  auto launch = [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    GRPO_LAUNCH(token_statistics_kernel<T>, static_cast<unsigned>(rows), kThreads, stream)(
        static_cast<const T*>(logits), vocab, temperature, targets, logsumexp, logprobs, entropy);
    return launched();
  };
  return GRPO_CUDA_DISPATCH(dtype, launch);
}

int token_logit_gradients(Dtype dtype, const void* logits, int64_t rows, int64_t vocab, float temperature,
                          const int64_t* targets, const float* logsumexp, const float* entropy,
                          const float* grad_logprobs, const float* grad_entropy, float* grad_logits, void* stream) {
  if (rows == 0) return 0;
  if (vocab <= 0 || !(temperature > 0.0f)) return static_cast<int>(cudaErrorInvalidValue);
  auto launch = [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const dim3 grid(static_cast<unsigned>(std::min<int64_t>(ceil_div(vocab, 256), 64)),
                    static_cast<unsigned>(std::min<int64_t>(rows, 65535)));
    GRPO_LAUNCH(token_logit_gradients_kernel<T>, grid, 256, stream)(static_cast<const T*>(logits), rows, vocab,
                                                                          temperature, targets, logsumexp, entropy,
                                                                          grad_logprobs, grad_entropy, grad_logits);
    return launched();
  };
  return GRPO_CUDA_DISPATCH(dtype, launch);
}

}  // namespace cuda_kernels
}  // namespace grpo
