// draw_tokens on CUDA (kernels/token_sampling.h): one block per row, a few passes over its logits
// (from L2 at decode sizes), no sort and no [B, V] temporary. Probabilities are recomputed in each
// pass as exp(logit / T - max) / sum, exactly as in the first. Masses are sums of p * 2^56 in
// 64-bit integers: exact whatever the order the threads add in, so a row's draw does not depend
// on scheduling. The top-k and top-p thresholds are radix searches over the probabilities' bit
// patterns (8, 8, 8 and 7 bits), by count and by mass, as the CPU kernel's; the draw is the first
// token in vocabulary order whose running kept mass exceeds u times the kept total.

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "kernels/cuda/common.cuh"

namespace grpo {
namespace cuda_kernels {
namespace {

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr int kRadixLevels = 4;  // 8, 8, 8 and 7 of the 31 bits of a positive float, high to low
constexpr int kMostBins = 256;
constexpr double kFixedOne = 0x1p56;  // mass 1 as an integer; a row's total mass is ~1

using Mass = unsigned long long;

struct Larger {
  __device__ float operator()(float a, float b) const { return fmaxf(a, b); }
};

__device__ __forceinline__ Mass fixed_mass(float p) { return __double2ull_rz(static_cast<double>(p) * kFixedOne); }
__device__ __forceinline__ double real_mass(Mass m) { return static_cast<double>(m) / kFixedOne; }

template <typename T>
struct Row {
  const T* logits;
  int64_t vocab;
  float temperature;
  float max = 0, inverse = 0;  // set after the first two passes

  __device__ float scaled(int64_t i) const { return tempered(to_float(logits[i]), temperature); }
  __device__ float probability(int64_t i) const { return expf(scaled(i) - max) * inverse; }
};

// The block's scratch for a radix search.
struct RadixScratch {
  Mass warp_histograms[kWarps][kMostBins];  // per warp, so that fewer threads contend for a bin
  Mass bin_mass[kMostBins];
  Mass above;       // weight of the tokens above the current bin
  unsigned prefix;  // the bits chosen so far
};

// Called by every thread of the block: the largest bit pattern v such that the tokens whose
// probability's bits are >= v (and >= floor) weigh at least `target`, each weighing its
// probability (top-p, masses p * 2^56) or 1 (top-k, kCount), searched 8, 8, 8 and 7 bits at a time.
template <bool kCount, typename T>
__device__ unsigned radix_threshold(const Row<T>& row, double target, unsigned floor, RadixScratch& scratch) {
  const int tid = threadIdx.x, warp = tid / 32;
  if (tid == 0) {
    scratch.above = 0;
    scratch.prefix = 0;
  }
  int remaining = 31;
  for (int level = 0; level < kRadixLevels; ++level) {
    const int width = level + 1 < kRadixLevels ? 8 : 7;
    const int shift = remaining - width;
    const unsigned bins = 1u << width;
    for (int k = tid; k < kWarps * kMostBins; k += kThreads) scratch.warp_histograms[k / kMostBins][k % kMostBins] = 0;
    __syncthreads();
    const unsigned level_prefix = scratch.prefix;
    for (int64_t i = tid; i < row.vocab; i += kThreads) {
      const float p = row.probability(i);
      const unsigned bits = __float_as_uint(p);
      if ((bits >> remaining) != level_prefix || bits < floor) continue;  // outside the level's bin, or below the floor
      atomicAdd(&scratch.warp_histograms[warp][(bits >> shift) & (bins - 1)], kCount ? Mass{1} : fixed_mass(p));
    }
    __syncthreads();
    for (unsigned bin = tid; bin < bins; bin += kThreads) {
      Mass total = 0;
      for (int w = 0; w < kWarps; ++w) total += scratch.warp_histograms[w][bin];
      scratch.bin_mass[bin] = total;
    }
    __syncthreads();
    if (tid == 0) {  // the highest bin where the weight at or above first reaches the target
      Mass at_or_above = scratch.above;
      unsigned chosen = 0;
      for (unsigned bin = bins; bin-- > 0;) {
        at_or_above += scratch.bin_mass[bin];
        if ((kCount ? static_cast<double>(at_or_above) : real_mass(at_or_above)) >= target) {
          chosen = bin;
          break;
        }
      }
      scratch.above = at_or_above - scratch.bin_mass[chosen];
      scratch.prefix = (level_prefix << width) | chosen;
    }
    __syncthreads();
    remaining = shift;
  }
  const unsigned result = scratch.prefix;
  __syncthreads();  // every thread has read it before a next search resets it
  return result;
}

template <typename T>
__global__ void __launch_bounds__(kThreads) draw_tokens_kernel(const T* logits, int64_t vocab, float temperature,
                                                               int64_t top_k, double top_p, double min_p,
                                                               const double* uniforms,
                                                               int64_t* tokens, float* logprobs) {
  __shared__ union {
    typename cub::BlockReduce<float, kThreads>::TempStorage reduce_float;
    typename cub::BlockReduce<double, kThreads>::TempStorage reduce_double;
    typename cub::BlockReduce<Mass, kThreads>::TempStorage reduce_mass;
    typename cub::BlockScan<Mass, kThreads>::TempStorage scan_mass;
  } storage;
  __shared__ RadixScratch radix;
  __shared__ float shared_max;
  __shared__ double shared_sum;
  __shared__ Mass shared_mass;
  __shared__ int64_t shared_token;

  const int64_t r = blockIdx.x;
  Row<T> row{logits + r * vocab, vocab, temperature};
  const int tid = threadIdx.x;

  // max of the scaled logits, then the float64 sum of exp(x - max)
  float local_max = -INFINITY;
  for (int64_t i = tid; i < vocab; i += kThreads) local_max = fmaxf(local_max, row.scaled(i));
  const float block_max = cub::BlockReduce<float, kThreads>(storage.reduce_float).Reduce(local_max, Larger{});
  if (tid == 0) shared_max = block_max;
  __syncthreads();
  row.max = shared_max;
  double local_sum = 0;
  for (int64_t i = tid; i < vocab; i += kThreads) local_sum += static_cast<double>(expf(row.scaled(i) - row.max));
  const double block_sum = cub::BlockReduce<double, kThreads>(storage.reduce_double).Sum(local_sum);
  if (tid == 0) shared_sum = block_sum;
  __syncthreads();
  const double sum = shared_sum;
  row.inverse = static_cast<float>(1.0 / sum);

  // The kept range: p >= threshold. Top-k keeps the tokens at or above the k-th largest p (ties
  // with it too); top-p then keeps, of those, the most likely down to the token where the mass at
  // or above first reaches top_p of their mass; min-p raises the bar to min_p times the largest p.
  unsigned floor_bits = 0;  // top-k's
  if (top_k > 0 && top_k < vocab)
    floor_bits = radix_threshold</*kCount=*/true>(row, static_cast<double>(top_k), 0u, radix);
  unsigned prefix = floor_bits;
  if (top_p < 1.0) {
    Mass local_mass = 0;
    for (int64_t i = tid; i < vocab; i += kThreads) {
      const float p = row.probability(i);
      if (__float_as_uint(p) >= floor_bits) local_mass += fixed_mass(p);
    }
    const Mass mass = cub::BlockReduce<Mass, kThreads>(storage.reduce_mass).Sum(local_mass);
    if (tid == 0) shared_mass = mass;
    __syncthreads();
    // Never below top-k's floor, even where rounding leaves the target out of reach.
    prefix = max(floor_bits, radix_threshold</*kCount=*/false>(row, top_p * real_mass(shared_mass), floor_bits, radix));
  }
  float threshold = __uint_as_float(prefix);
  if (min_p > 0.0) threshold = fmaxf(threshold, static_cast<float>(min_p) * row.inverse);  // p of the max is 1 / sum

  // The draw: each thread owns a contiguous run of tokens; a scan of the runs' kept masses finds
  // the run where the running mass first exceeds the target, and its thread walks it.
  const int64_t run = ceil_div(vocab, kThreads);
  const int64_t run_first = min(vocab, tid * run), run_last = min(vocab, run_first + run);
  Mass run_mass = 0;
  for (int64_t i = run_first; i < run_last; ++i) {
    const float p = row.probability(i);
    if (p >= threshold) run_mass += fixed_mass(p);
  }
  Mass before = 0, kept = 0;
  cub::BlockScan<Mass, kThreads>(storage.scan_mass).ExclusiveSum(run_mass, before, kept);
  const float total = static_cast<float>(real_mass(kept));
  const float target = fminf(static_cast<float>(uniforms[r] * static_cast<double>(total)), nextafterf(total, 0.0f));
  if (tid == 0) shared_token = vocab - 1;
  __syncthreads();
  if (!(static_cast<float>(real_mass(before)) > target) && static_cast<float>(real_mass(before + run_mass)) > target) {
    Mass running = before;
    for (int64_t i = run_first; i < run_last; ++i) {
      const float p = row.probability(i);
      if (!(p >= threshold)) continue;
      running += fixed_mass(p);
      if (static_cast<float>(real_mass(running)) > target) {
        shared_token = i;
        break;
      }
    }
  }
  __syncthreads();
  if (tid == 0) {
    const int64_t token = shared_token;
    tokens[r] = token;
    logprobs[r] = static_cast<float>(static_cast<double>(row.scaled(token)) - static_cast<double>(row.max) - log(sum));
  }
}

}  // namespace

int draw_tokens(Dtype dtype, const void* logits, int64_t rows, int64_t vocab, float temperature, int64_t top_k,
                double top_p, double min_p, const double* uniforms, int64_t* tokens, float* logprobs, void* stream) {
  if (rows == 0) return 0;
  if (vocab <= 0 || !(temperature > 0.0f)) return static_cast<int>(cudaErrorInvalidValue);
  auto launch = [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    GRPO_LAUNCH(draw_tokens_kernel<T>, static_cast<unsigned>(rows), kThreads, stream)(
        static_cast<const T*>(logits), vocab, temperature, top_k, top_p, min_p, uniforms, tokens, logprobs);
    return launched();
  };
  return GRPO_CUDA_DISPATCH(dtype, launch);
}

}  // namespace cuda_kernels
}  // namespace grpo
