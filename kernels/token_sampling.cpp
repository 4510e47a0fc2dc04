#include "kernels/token_sampling.h"

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "kernels/avx512_math.h"
#include "kernels/cpu_kernels.h"
#include "kernels/cuda_kernels.h"

namespace grpo {
namespace {

// Adds 16 floats to a float64 sum (as two halves of 8), so that sums over the vocabulary do not
// depend on float32 rounding.
__attribute__((target("avx512f"))) inline __m512d add_to_double(__m512d sum, __m512 values) {
  sum = _mm512_add_pd(sum, _mm512_cvtps_pd(_mm512_castps512_ps256(values)));
  return _mm512_add_pd(sum, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(values), 1))));
}

constexpr int64_t kLargeVocabulary = 16384;

struct RowDraw {
  int64_t token;
  float logprob;
};

// The largest bit pattern v such that the tokens whose probability's bits are >= v (and >= floor)
// weigh at least `target`: each token weighs its probability (top-p) or 1 (top-k, kCount). A
// radix search over the 31 bits of a positive float: 16 then 15 at large vocabularies, 11, 10, 10
// at small ones, where clearing 2^16 bins would cost more than the row. Weights sum in float64
// (exact for counts). histogram: 2^16 doubles of scratch (2^11 below kLargeVocabulary).
template <bool kCount>
uint32_t radix_threshold(const float* probs, int64_t vocab, double target, uint32_t floor, double* histogram) {
  const auto* bits = reinterpret_cast<const uint32_t*>(probs);
  double above = 0;  // weight of the tokens above the current bin
  uint32_t prefix = 0;
  int remaining = 31;
  const std::vector<int> widths = vocab >= kLargeVocabulary ? std::vector<int>{16, 15} : std::vector<int>{11, 10, 10};
  for (const int width : widths) {
    const int shift_bits = remaining - width;
    const uint32_t bins = 1u << width;
    std::fill(histogram, histogram + bins, 0.0);
    for (int64_t i = 0; i < vocab; ++i) {
      const uint32_t b = bits[i];
      if ((b >> remaining) != prefix || b < floor) continue;  // outside the level's bin, or below the floor
      histogram[(b >> shift_bits) & (bins - 1)] += kCount ? 1.0 : probs[i];
    }
    uint32_t chosen = 0;
    double at_or_above = above;
    for (uint32_t bin = bins; bin-- > 0;) {
      at_or_above += histogram[bin];
      if (at_or_above >= target) {
        chosen = bin;
        break;
      }
    }
    above = at_or_above - histogram[chosen];
    prefix = (prefix << width) | chosen;
    remaining = shift_bits;
  }
  return prefix;
}

// One row. probs: V floats of scratch; histogram: 2^16 doubles of scratch (2^11 below kLargeVocabulary).
__attribute__((target("avx512f"))) RowDraw draw_row(const float* logits, int64_t vocab, float temperature,
                                                    int64_t top_k, double top_p, double min_p, double uniform,
                                                    float* probs, double* histogram) {
  const bool scale = temperature != 1.0f;
  const __m512 t = _mm512_set1_ps(temperature);
  const int64_t whole = vocab / 16 * 16;
  // scaled logits into probs, and their max
  __m512 max16 = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  for (int64_t i = 0; i < whole; i += 16) {
    __m512 x = _mm512_loadu_ps(logits + i);
    if (scale) x = _mm512_div_ps(x, t);
    _mm512_storeu_ps(probs + i, x);
    max16 = _mm512_max_ps(max16, x);
  }
  float max = _mm512_reduce_max_ps(max16);
  for (int64_t i = whole; i < vocab; ++i) {
    probs[i] = scale ? logits[i] / temperature : logits[i];
    max = std::max(max, probs[i]);
  }
  // exp(x - max) and their float64 sum
  const __m512 shift = _mm512_set1_ps(max);
  __m512d sum8 = _mm512_setzero_pd();
  float scaled_tail[16];
  for (int64_t i = 0; i < whole; i += 16) {
    const __m512 e = exp16(_mm512_sub_ps(_mm512_loadu_ps(probs + i), shift));
    _mm512_storeu_ps(probs + i, e);
    sum8 = add_to_double(sum8, e);
  }
  double sum = _mm512_reduce_add_pd(sum8);
  if (whole < vocab) {
    std::memset(scaled_tail, 0, sizeof(scaled_tail));
    std::memcpy(scaled_tail, probs + whole, sizeof(float) * static_cast<size_t>(vocab - whole));
    const __mmask16 lanes = static_cast<__mmask16>((1u << (vocab - whole)) - 1);
    const __m512 e = exp16(_mm512_sub_ps(_mm512_loadu_ps(scaled_tail), shift));
    _mm512_mask_storeu_ps(probs + whole, lanes, e);
    for (int64_t i = whole; i < vocab; ++i) sum += probs[i];
  }
  // The log-prob needs the token's scaled logit, recomputed from the input at the end.
  const double log_sum = std::log(sum);
  const float inverse = static_cast<float>(1.0 / sum);
  // Normalized probabilities and the float64 mass of all
  __m512d mass8 = _mm512_setzero_pd();
  const __m512 inv = _mm512_set1_ps(inverse);
  for (int64_t i = 0; i < whole; i += 16) {
    const __m512 p = _mm512_mul_ps(_mm512_loadu_ps(probs + i), inv);
    _mm512_storeu_ps(probs + i, p);
    mass8 = add_to_double(mass8, p);
  }
  double mass = _mm512_reduce_add_pd(mass8);
  for (int64_t i = whole; i < vocab; ++i) mass += (probs[i] *= inverse);

  // The kept range: p >= threshold. Top-k keeps the tokens at or above the k-th largest p (ties
  // with it too); top-p then keeps, of those, the most likely down to the token where the mass at
  // or above first reaches top_p of their mass; min-p raises the bar to min_p times the largest p.
  uint32_t floor_bits = 0;  // top-k's
  if (top_k > 0 && top_k < vocab) {
    floor_bits = radix_threshold</*kCount=*/true>(probs, vocab, static_cast<double>(top_k), 0, histogram);
    mass = 0;
    for (int64_t i = 0; i < vocab; ++i)
      if (reinterpret_cast<const uint32_t*>(probs)[i] >= floor_bits) mass += probs[i];
  }
  // Never below top-k's floor, even where rounding leaves top-p's target out of reach.
  const uint32_t threshold_bits =
      top_p < 1.0 ? std::max(floor_bits, radix_threshold</*kCount=*/false>(probs, vocab, top_p * mass, floor_bits, histogram))
                  : floor_bits;
  float threshold;
  std::memcpy(&threshold, &threshold_bits, sizeof(threshold));
  if (min_p > 0.0) threshold = std::max(threshold, static_cast<float>(min_p) * inverse);  // p of the max is 1 / sum

  // The draw: the first token whose running kept mass (float64, read as float32) exceeds u times
  // the kept total, kept strictly below the total (a token of mass 0 never owns an interval).
  double kept = 0;
  for (int64_t i = 0; i < vocab; ++i)
    if (probs[i] >= threshold) kept += probs[i];
  const float total = static_cast<float>(kept);
  const float target = std::min(static_cast<float>(uniform * static_cast<double>(total)), std::nextafter(total, 0.0f));
  int64_t token = vocab - 1;
  double running = 0;
  for (int64_t i = 0; i < vocab; ++i) {
    if (!(probs[i] >= threshold)) continue;
    running += probs[i];
    if (static_cast<float>(running) > target) {
      token = i;
      break;
    }
  }
  const float token_scaled = scale ? logits[token] / temperature : logits[token];
  return {token, static_cast<float>(static_cast<double>(token_scaled) - static_cast<double>(max) - log_sum)};
}

}  // namespace

bool draw_tokens_has_kernel(const at::Tensor& logits) {
  return (runs_on_cpu_kernels(logits) || runs_on_cuda_kernels(logits)) && logits.dim() == 2;
}

TokenDraw draw_tokens(const at::Tensor& logits_in, double temperature, int64_t top_k, double top_p, double min_p,
                      const at::Tensor& uniforms_in) {
  if (logits_in.is_cuda()) return draw_tokens_cuda(logits_in, temperature, top_k, top_p, min_p, uniforms_in);
  TORCH_CHECK(draw_tokens_has_kernel(logits_in), "draw_tokens: needs [B, V] float32 logits on an AVX-512 CPU");
  TORCH_CHECK(temperature > 0, "draw_tokens: temperature must be > 0");
  TORCH_CHECK(uniforms_in.numel() == logits_in.size(0), "draw_tokens: ", uniforms_in.numel(), " uniforms for ",
              logits_in.size(0), " rows");
  const at::Tensor logits = logits_in.contiguous();
  const at::Tensor uniforms = uniforms_in.to(at::kCPU, at::kDouble).contiguous();
  const int64_t rows = logits.size(0), vocab = logits.size(1);
  TokenDraw out{at::empty({rows}, at::kLong), at::empty({rows}, at::kFloat)};
  const float* in = logits.data_ptr<float>();
  const double* u = uniforms.data_ptr<double>();
  int64_t* tokens = out.tokens.data_ptr<int64_t>();
  float* logprobs = out.logprobs.data_ptr<float>();
  // A row is ~3 passes over V: worth a thread from a few thousand tokens on.
  at::parallel_for(0, rows, rows_per_task(vocab), [&](int64_t first, int64_t last) {
    std::vector<float> probs(static_cast<size_t>(vocab));
    const bool searches = top_p < 1.0 || (top_k > 0 && top_k < vocab);
    std::vector<double> histogram(!searches ? 0 : vocab >= kLargeVocabulary ? size_t{1} << 16 : size_t{1} << 11);
    for (int64_t r = first; r < last; ++r) {
      const RowDraw d = draw_row(in + r * vocab, vocab, static_cast<float>(temperature), top_k, top_p, min_p, u[r],
                                 probs.data(), histogram.data());
      tokens[r] = d.token;
      logprobs[r] = d.logprob;
    }
  });
  return out;
}

}  // namespace grpo
