#include "kernels/decode_attention.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "kernels/cpu_kernels.h"
#include "kernels/cuda_kernels.h"

namespace grpo {
namespace {

constexpr int64_t kMaxHeadDim = 256;  // 16 vectors of accumulators
constexpr float kMinusInf = -std::numeric_limits<float>::infinity();

// A run of cached slots of one (row, kv head): the prefix's, then the row's own.
struct Segment {
  const float* keys;
  const float* values;
  int64_t key_stride, value_stride;  // floats between consecutive slots
  const bool* real;                  // [count]
  int64_t count;
};

// The `group` query heads that share one kv head (q_stride floats apart), over `segments`, into
// out (out_stride floats apart). scores: group * (slots of all segments) floats of scratch.
__attribute__((target("avx512f"))) void attend_kv_head(const float* q, int64_t q_stride, int64_t group, int64_t dim,
                                                       const Segment* segments, int num_segments, float scale,
                                                       float* scores, float* out, int64_t out_stride) {
  const int64_t vectors = dim / 16;
  int64_t slots = 0;
  for (int s = 0; s < num_segments; ++s) slots += segments[s].count;
  int64_t column = 0;
  for (int s = 0; s < num_segments; ++s) {
    const Segment& seg = segments[s];
    for (int64_t j = 0; j < seg.count; ++j, ++column) {
      if (!seg.real[j]) {
        for (int64_t g = 0; g < group; ++g) scores[g * slots + column] = kMinusInf;
        continue;
      }
      const float* key = seg.keys + j * seg.key_stride;
      for (int64_t g = 0; g < group; ++g) {
        const float* query = q + g * q_stride;
        __m512 dot = _mm512_mul_ps(_mm512_loadu_ps(query), _mm512_loadu_ps(key));
        for (int64_t c = 1; c < vectors; ++c)
          dot = _mm512_fmadd_ps(_mm512_loadu_ps(query + 16 * c), _mm512_loadu_ps(key + 16 * c), dot);
        scores[g * slots + column] = _mm512_reduce_add_ps(dot) * scale;
      }
    }
  }
  for (int64_t g = 0; g < group; ++g) {
    float* row = scores + g * slots;
    float* target = out + g * out_stride;
    float max = kMinusInf;
    for (int64_t j = 0; j < slots; ++j) max = std::max(max, row[j]);
    __m512 acc[kMaxHeadDim / 16];
    for (int64_t c = 0; c < vectors; ++c) acc[c] = _mm512_setzero_ps();
    if (max == kMinusInf) {  // no real key: zeros
      for (int64_t c = 0; c < vectors; ++c) _mm512_storeu_ps(target + 16 * c, acc[c]);
      continue;
    }
    float sum = 0;
    for (int64_t j = 0; j < slots; ++j) {
      row[j] = row[j] == kMinusInf ? 0.0f : std::exp(row[j] - max);
      sum += row[j];
    }
    column = 0;
    for (int s = 0; s < num_segments; ++s) {
      const Segment& seg = segments[s];
      for (int64_t j = 0; j < seg.count; ++j, ++column) {
        if (row[column] == 0.0f) continue;
        const __m512 p = _mm512_set1_ps(row[column]);
        const float* value = seg.values + j * seg.value_stride;
        for (int64_t c = 0; c < vectors; ++c) acc[c] = _mm512_fmadd_ps(p, _mm512_loadu_ps(value + 16 * c), acc[c]);
      }
    }
    const __m512 inverse = _mm512_set1_ps(1.0f / sum);
    for (int64_t c = 0; c < vectors; ++c) _mm512_storeu_ps(target + 16 * c, _mm512_mul_ps(acc[c], inverse));
  }
}

}  // namespace

void check_decode_attention_inputs(const at::Tensor& q, const DecodeKeys& k) {
  TORCH_CHECK(q.dim() == 3 && k.keys.dim() == 4 && k.values.sizes() == k.keys.sizes(), "decode_attention: q ",
              q.sizes(), ", keys ", k.keys.sizes(), ", values ", k.values.sizes());
  const int64_t b = q.size(0), heads = q.size(1), dim = q.size(2), kv = k.keys.size(1), s = k.keys.size(2);
  TORCH_CHECK(k.keys.size(0) == b && k.keys.size(3) == dim && kv > 0 && heads % kv == 0, "decode_attention: keys ",
              k.keys.sizes(), " do not fit q ", q.sizes());
  TORCH_CHECK(k.mask.dim() == 2 && k.mask.size(0) == b && k.mask.size(1) == s, "decode_attention: mask ",
              k.mask.sizes(), " for keys ", k.keys.sizes());
  if (!k.prefix_keys.defined()) return;
  TORCH_CHECK(k.prefix_keys.dim() == 4 && k.prefix_values.sizes() == k.prefix_keys.sizes() &&
                  k.prefix_keys.size(1) == kv && k.prefix_keys.size(3) == dim,
              "decode_attention: prefix keys ", k.prefix_keys.sizes(), " do not fit keys ", k.keys.sizes());
  TORCH_CHECK(k.prefix_mask.dim() == 2 && k.prefix_mask.size(0) == k.prefix_keys.size(0) &&
                  k.prefix_mask.size(1) == k.prefix_keys.size(2),
              "decode_attention: prefix mask ", k.prefix_mask.sizes(), " for prefix keys ", k.prefix_keys.sizes());
  TORCH_CHECK(k.prefix_row.dim() == 1 && k.prefix_row.size(0) == b, "decode_attention: prefix_row ",
              k.prefix_row.sizes(), " for ", b, " rows");
}

namespace {

// Makes a tensor's last dimension contiguous (the kernel steps through it with vector loads).
at::Tensor unit_inner_stride(const at::Tensor& t) { return t.stride(-1) == 1 ? t : t.contiguous(); }

}  // namespace

bool decode_attention_has_kernel(const at::Tensor& q, const at::Tensor& keys) {
  const int64_t dim = q.size(-1);
  if (runs_on_cuda_kernels(q)) return runs_on_cuda_kernels(q, keys) && dim <= kMaxHeadDim;
  return runs_on_cpu_kernels(q) && runs_on_cpu_kernels(keys) && dim % 16 == 0 && dim <= kMaxHeadDim;
}

at::Tensor decode_attention_reference(const at::Tensor& q, const DecodeKeys& k, double scale) {
  check_decode_attention_inputs(q, k);
  const int64_t b = q.size(0), heads = q.size(1), dim = q.size(2), kv = k.keys.size(1);
  const at::Tensor grouped = q.reshape({b, kv, heads / kv, dim}).to(at::kFloat);
  std::vector<at::Tensor> keys{k.keys}, values{k.values}, masks{k.mask};
  if (k.prefix_keys.defined()) {
    keys.insert(keys.begin(), k.prefix_keys.index_select(0, k.prefix_row));
    values.insert(values.begin(), k.prefix_values.index_select(0, k.prefix_row));
    masks.insert(masks.begin(), k.prefix_mask.index_select(0, k.prefix_row));
  }
  const at::Tensor all_keys = at::cat(keys, 2).to(at::kFloat), all_values = at::cat(values, 2).to(at::kFloat);
  const at::Tensor real = at::cat(masks, 1).to(at::kBool).view({b, 1, 1, -1});
  const at::Tensor scores = at::matmul(grouped, all_keys.transpose(2, 3)).mul_(scale).masked_fill_(real.logical_not(), -INFINITY);
  const at::Tensor blind = real.logical_not().all(-1, /*keepdim=*/true);  // [B, 1, 1, 1]
  const at::Tensor probs = at::softmax(scores.masked_fill(blind, 0.0), -1).masked_fill_(real.logical_not(), 0.0);
  return at::matmul(probs, all_values).view({b, heads, dim}).to(q.scalar_type());
}

at::Tensor decode_attention(const at::Tensor& q_in, const DecodeKeys& k, double scale) {
  if (!decode_attention_has_kernel(q_in, k.keys) ||
      (k.prefix_keys.defined() && !decode_attention_has_kernel(q_in, k.prefix_keys)))
    return decode_attention_reference(q_in, k, scale);
  if (runs_on_cuda_kernels(q_in)) {
    // The CUDA kernel runs a warp per query head of a KV head's group, at most 32 of them.
    const bool fits = q_in.dim() == 3 && k.keys.dim() == 4 && k.keys.size(1) > 0 && q_in.size(1) / k.keys.size(1) <= 32;
    return fits ? decode_attention_cuda(q_in, k, scale) : decode_attention_reference(q_in, k, scale);
  }
  check_decode_attention_inputs(q_in, k);
  const at::Tensor q = unit_inner_stride(q_in);
  const at::Tensor keys = unit_inner_stride(k.keys), values = unit_inner_stride(k.values);
  const at::Tensor mask = unit_inner_stride(k.mask.to(at::kBool));
  const bool with_prefix = k.prefix_keys.defined();
  at::Tensor prefix_keys, prefix_values, prefix_mask, prefix_row;
  if (with_prefix) {
    prefix_keys = unit_inner_stride(k.prefix_keys);
    prefix_values = unit_inner_stride(k.prefix_values);
    prefix_mask = unit_inner_stride(k.prefix_mask.to(at::kBool));
    prefix_row = k.prefix_row.to(at::kLong).contiguous();
  }
  const int64_t b = q.size(0), heads = q.size(1), dim = q.size(2), kv = keys.size(1), group = heads / kv;
  const int64_t own = keys.size(2), prefix = with_prefix ? prefix_keys.size(2) : 0;
  at::Tensor out = at::empty({b, heads, dim}, q.options());
  const float* q_data = q.data_ptr<float>();
  float* out_data = out.data_ptr<float>();
  // Tasks of at least ~64k multiply-adds, so that waking a thread pays for itself.
  const int64_t work = std::max<int64_t>(1, 2 * group * (own + prefix) * dim);
  at::parallel_for(0, b * kv, std::max<int64_t>(1, (1 << 16) / work), [&](int64_t first, int64_t last) {
    std::vector<float> scores(static_cast<size_t>(group * (own + prefix)));
    for (int64_t item = first; item < last; ++item) {
      const int64_t row = item / kv, head = item % kv;
      Segment segments[2];
      int count = 0;
      if (with_prefix) {
        const int64_t p = prefix_row.data_ptr<int64_t>()[row];
        TORCH_CHECK(p >= 0 && p < prefix_keys.size(0), "decode_attention: prefix_row ", p, " out of range");
        segments[count++] = {prefix_keys.data_ptr<float>() + p * prefix_keys.stride(0) + head * prefix_keys.stride(1),
                             prefix_values.data_ptr<float>() + p * prefix_values.stride(0) + head * prefix_values.stride(1),
                             prefix_keys.stride(2), prefix_values.stride(2),
                             prefix_mask.data_ptr<bool>() + p * prefix_mask.stride(0), prefix};
      }
      segments[count++] = {keys.data_ptr<float>() + row * keys.stride(0) + head * keys.stride(1),
                           values.data_ptr<float>() + row * values.stride(0) + head * values.stride(1),
                           keys.stride(2), values.stride(2), mask.data_ptr<bool>() + row * mask.stride(0), own};
      attend_kv_head(q_data + row * q.stride(0) + head * group * q.stride(1), q.stride(1), group, dim, segments, count,
                     static_cast<float>(scale), scores.data(), out_data + (row * heads + head * group) * dim, dim);
    }
  });
  return out;
}

}  // namespace grpo
