// Decode attention on CUDA (kernels/decode_attention.h): one block per (row, KV head, key range),
// one warp per query head of the KV head's group. Each warp walks the range's slots with an online
// softmax (running max, sum and weighted values), its lanes splitting the head dimension; the
// group's warps read the same keys and values at about the same time, so a KV head's cache comes
// from memory once, not once per query head. Long caches are split into key ranges merged by a
// second kernel, so that a few rows still occupy the device. The prefix shared by a group of rows
// is read in place, never gathered per row. Float32 arithmetic whatever the dtype.

#include <algorithm>
#include <cmath>
#include <type_traits>

#include "kernels/cuda/common.cuh"

namespace grpo {
namespace cuda_kernels {
namespace {

constexpr int kMaxDim = 256;
constexpr int kMaxGroup = 32;  // query heads per KV head: one warp each, at most 1,024 threads
constexpr int kLaneElements = kMaxDim / 32;  // head-dim elements per lane
constexpr int kMinSlotsPerSplit = 128;

__device__ __forceinline__ float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// exp(a - b) with exp(-inf - anything) = 0 (an empty running max contributes nothing).
__device__ __forceinline__ float weight_of(float a, float b) { return a == -INFINITY ? 0.0f : expf(a - b); }

template <typename T>
__global__ void decode_attention_kernel(DecodeAttentionPointers p, DecodeAttentionShape s, float scale, int splits,
                                        float* workspace) {
  const int64_t group = s.heads / s.kv_heads;
  const int64_t row = blockIdx.x / s.kv_heads, kv = blockIdx.x % s.kv_heads;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t head = kv * group + warp, item = row * s.heads + head;  // this warp's query head
  const int split = blockIdx.y;
  const int64_t total = s.prefix_slots + s.slots;
  const int64_t per_split = ceil_div(total, splits);
  const int64_t first = split * per_split, last = min(total, first + per_split);

  const T* q = static_cast<const T*>(p.q) + row * s.q_stride_batch + head * s.q_stride_head;
  float query[kLaneElements];
  for (int c = 0; c < kLaneElements; ++c) {
    const int64_t d = lane + 32 * c;
    query[c] = d < s.dim ? to_float(q[d]) : 0.0f;
  }
  const T* own_keys = static_cast<const T*>(p.keys) + row * s.key_stride_batch + kv * s.key_stride_head;
  const T* own_values = static_cast<const T*>(p.values) + row * s.value_stride_batch + kv * s.value_stride_head;
  const bool* own_mask = p.mask + row * s.mask_stride_batch;
  const T *prefix_keys = nullptr, *prefix_values = nullptr;
  const bool* prefix_mask = nullptr;
  if (p.prefix_keys != nullptr) {
    const int64_t r = p.prefix_row[row];
    prefix_keys = static_cast<const T*>(p.prefix_keys) + r * s.prefix_key_stride_row + kv * s.prefix_key_stride_head;
    prefix_values =
        static_cast<const T*>(p.prefix_values) + r * s.prefix_value_stride_row + kv * s.prefix_value_stride_head;
    prefix_mask = p.prefix_mask + r * s.prefix_mask_stride_row;
  }

  float running_max = -INFINITY, running_sum = 0.0f, acc[kLaneElements] = {};
  for (int64_t j = first; j < last; ++j) {
    const bool in_prefix = j < s.prefix_slots;
    const int64_t slot = in_prefix ? j : j - s.prefix_slots;
    if (!(in_prefix ? prefix_mask[slot] : own_mask[slot])) continue;  // the same j on every lane
    const T* key = in_prefix ? prefix_keys + slot * s.prefix_key_stride_slot : own_keys + slot * s.key_stride_slot;
    const T* value =
        in_prefix ? prefix_values + slot * s.prefix_value_stride_slot : own_values + slot * s.value_stride_slot;
    float dot = 0.0f;
    for (int c = 0; c < kLaneElements; ++c) {
      const int64_t d = lane + 32 * c;
      if (d < s.dim) dot += query[c] * to_float(key[d]);
    }
    const float score = warp_sum(dot) * scale;
    if (score > running_max) {
      const float correction = weight_of(running_max, score);
      running_sum *= correction;
      for (int c = 0; c < kLaneElements; ++c) acc[c] *= correction;
      running_max = score;
    }
    const float weight = expf(score - running_max);
    running_sum += weight;
    for (int c = 0; c < kLaneElements; ++c) {
      const int64_t d = lane + 32 * c;
      if (d < s.dim) acc[c] += weight * to_float(value[d]);
    }
  }

  // A row with no real key gets zeros.
  for (int c = 0; c < kLaneElements; ++c) {
    const int64_t d = lane + 32 * c;
    if (d >= s.dim) break;
    if (splits == 1) {
      static_cast<T*>(p.out)[item * s.dim + d] = from_float<T>(running_max == -INFINITY ? 0.0f : acc[c] / running_sum);
    } else {
      float* partial = workspace + (item * splits + split) * (s.dim + 2);
      partial[2 + d] = acc[c];
      if (d == 0) {
        partial[0] = running_max;
        partial[1] = running_sum;
      }
    }
  }
}

// Merges the key ranges' partial (max, sum, weighted values) of one (row, head) per block.
template <typename T>
__global__ void merge_splits_kernel(const float* workspace, int splits, int64_t dim, T* out) {
  const int64_t item = blockIdx.x;
  const float* partials = workspace + item * splits * (dim + 2);
  float block_max = -INFINITY;
  for (int k = 0; k < splits; ++k) block_max = fmaxf(block_max, partials[k * (dim + 2)]);
  float block_sum = 0.0f;
  for (int k = 0; k < splits; ++k)
    block_sum += partials[k * (dim + 2) + 1] * weight_of(partials[k * (dim + 2)], block_max);
  for (int64_t d = threadIdx.x; d < dim; d += blockDim.x) {
    float value = 0.0f;
    for (int k = 0; k < splits; ++k)
      value += partials[k * (dim + 2) + 2 + d] * weight_of(partials[k * (dim + 2)], block_max);
    out[item * dim + d] = from_float<T>(block_max == -INFINITY ? 0.0f : value / block_sum);
  }
}

}  // namespace

int decode_attention_splits(const DecodeAttentionShape& shape, int multiprocessors) {
  const int64_t items = std::max<int64_t>(1, shape.batch * shape.kv_heads);  // blocks per key range
  const int64_t total = shape.prefix_slots + shape.slots;
  const int64_t wanted = ceil_div(2 * static_cast<int64_t>(multiprocessors), items);
  const int64_t most = std::max<int64_t>(1, total / kMinSlotsPerSplit);
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>({wanted, most, 64})));
}

int64_t decode_attention_workspace_floats(const DecodeAttentionShape& shape, int splits) {
  return splits <= 1 ? 0 : shape.batch * shape.heads * splits * (shape.dim + 2);
}

int decode_attention(Dtype dtype, const DecodeAttentionPointers& pointers, const DecodeAttentionShape& shape,
                     float scale, int splits, float* workspace, void* stream) {
  if (shape.dim > kMaxDim || shape.kv_heads <= 0 || shape.heads % shape.kv_heads != 0 ||
      shape.heads / shape.kv_heads > kMaxGroup || splits < 1)
    return static_cast<int>(cudaErrorInvalidValue);
  if (shape.batch * shape.heads == 0) return 0;
  auto launch = [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const dim3 grid(static_cast<unsigned>(shape.batch * shape.kv_heads), static_cast<unsigned>(splits));
    const unsigned threads = static_cast<unsigned>(32 * (shape.heads / shape.kv_heads));
    GRPO_LAUNCH(decode_attention_kernel<T>, grid, threads, stream)(pointers, shape, scale, splits, workspace);
    if (const int error = launched()) return error;
    if (splits > 1) {
      GRPO_LAUNCH(merge_splits_kernel<T>, static_cast<unsigned>(shape.batch * shape.heads), 128, stream)(
          workspace, splits, shape.dim, static_cast<T*>(pointers.out));
      return launched();
    }
    return 0;
  };
  return GRPO_CUDA_DISPATCH(dtype, launch);
}

}  // namespace cuda_kernels
}  // namespace grpo
