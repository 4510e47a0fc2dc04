#include "rollout/sampler.h"

#include <ATen/ATen.h>

namespace grpo {
namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

// Below this vocabulary a sort of the row is cheaper than three radix passes.
constexpr int64_t kSortTopPBelow = 1024;

// Top-p threshold by sorting, for small vocabularies (and float64): the reference the radix
// search must equal.
at::Tensor top_p_threshold_by_sort(const at::Tensor& probs, double top_p) {
  const at::Tensor sorted = std::get<0>(probs.sort(-1, /*descending=*/true));
  const at::Tensor masses = sorted.to(at::kDouble);  // float64 sums, as top_p_threshold
  const at::Tensor target = top_p * masses.sum(-1, true);
  // A token is kept when the tokens before it have not yet reached the target; the threshold is
  // the last kept one.
  const at::Tensor kept = (masses.cumsum(-1) - masses) < target;
  const at::Tensor last_kept = (kept.to(at::kLong).sum(-1, true) - 1).clamp_min(0);
  return sorted.gather(1, last_kept);
}

}  // namespace

double counter_uniform(uint64_t seed, int64_t step) {
  const uint64_t bits = splitmix64(seed ^ splitmix64(static_cast<uint64_t>(step)));
  return static_cast<double>(bits >> 11) * (1.0 / 9007199254740992.0);
}

at::Tensor top_p_threshold(const at::Tensor& probs, double top_p) {
  TORCH_CHECK(probs.dim() == 2 && probs.scalar_type() == at::kFloat, "top_p_threshold: probs must be [B, V] float32");
  const at::Tensor values = probs.contiguous();
  // Non-negative floats order like their bit patterns: search the 31 bits from the top, a few at a
  // time, keeping the bin where the mass at or above first reaches the target.
  // Keys are computed on the int32 bit patterns (bits < 2^31) and widened only for scatter_add:
  // half the memory traffic of int64 arithmetic over the vocabulary.
  const at::Tensor bits = values.view(at::kInt);
  const int64_t rows = values.size(0), vocab = values.size(1);
  // Masses accumulate in float64: float32 sums depend on the reduction order (which differs between
  // LibTorch versions and devices) enough to move a token across the cut.
  const at::Tensor masses = values.to(at::kDouble);
  const at::Tensor target = top_p * masses.sum(-1, true);
  at::Tensor mass_above = at::zeros({rows, 1}, masses.options());  // mass of the tokens above the bin
  at::Tensor prefix = at::zeros({rows, 1}, bits.options().dtype(at::kLong));  // the threshold's bits found so far
  // Two levels of 2^16 and 2^15 bins for large vocabularies, three of ~2^10 for small ones.
  const std::vector<int64_t> widths = vocab >= 16384 ? std::vector<int64_t>{16, 15} : std::vector<int64_t>{11, 10, 10};
  int64_t remaining = 31;
  for (int64_t width : widths) {
    const int64_t shift = remaining - width, bins = int64_t{1} << width;
    at::Tensor key = shift > 0 ? bits.__rshift__(shift) : bits;
    if (remaining < 31) {
      // Tokens outside the current bin land in two extra bins (below: 0, above: bins + 1) that
      // the search ignores: the mass above is already counted.
      key = (key - (prefix.__lshift__(width) - 1).to(at::kInt)).clamp_(0, bins + 1).to(at::kLong);
    } else {
      key = (key + 1).to(at::kLong);
    }
    const at::Tensor mass =
        at::zeros({rows, bins + 2}, masses.options()).scatter_add_(1, key, masses).narrow(1, 1, bins);
    // Mass at or above each bin; non-increasing in the bin index.
    const at::Tensor at_or_above = mass.flip(1).cumsum(1).flip(1) + mass_above;
    const at::Tensor chosen = ((at_or_above >= target).sum(1, true) - 1).clamp_min(0);
    mass_above = (at_or_above - mass).gather(1, chosen);
    prefix = prefix.__lshift__(width) + chosen;
    remaining = shift;
  }
  return prefix.to(at::kInt).view(at::kFloat);
}

namespace {

// filtered_probabilities before the final renormalization.
at::Tensor filtered_weights(const at::Tensor& logits, const SamplingOptions& options) {
  TORCH_CHECK(options.temperature > 0, "filtered_probabilities: temperature must be > 0");
  const auto dtype = logits.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  const at::Tensor scaled = options.temperature == 1.0 ? logits.to(dtype) : logits.to(dtype) / options.temperature;
  at::Tensor probs = at::softmax(scaled, -1);  // [B, V]
  const int64_t vocab = probs.size(-1);
  at::Tensor top_values;  // the top-k candidates, sorted, when top-k ran
  if (options.top_k > 0 && options.top_k < vocab) {
    top_values = std::get<0>(probs.topk(options.top_k, -1, /*largest=*/true, /*sorted=*/true));
    probs.masked_fill_(probs < top_values.narrow(-1, options.top_k - 1, 1), 0.0);
  }
  if (options.top_p < 1.0) {
    at::Tensor threshold;
    if (top_values.defined()) {
      // Only the k candidates can be kept: search them (already sorted) instead of the vocabulary.
      const at::Tensor target = options.top_p * probs.sum(-1, true);
      const at::Tensor kept = (top_values.cumsum(-1) - top_values) < target;
      threshold = top_values.gather(1, (kept.to(at::kLong).sum(-1, true) - 1).clamp_min(0));
    } else if (dtype == at::kDouble || vocab < kSortTopPBelow) {
      threshold = top_p_threshold_by_sort(probs, options.top_p);
    } else {
      threshold = top_p_threshold(probs, options.top_p);
    }
    probs.masked_fill_(probs < threshold, 0.0);
  }
  if (options.min_p > 0.0) {
    const at::Tensor top = std::get<0>(probs.max(-1, true));
    probs.masked_fill_(probs < options.min_p * top, 0.0);
  }
  return probs;
}

}  // namespace

at::Tensor filtered_probabilities(const at::Tensor& logits, const SamplingOptions& options) {
  const at::Tensor weights = filtered_weights(logits, options);
  return weights / weights.sum(-1, true);
}

at::Tensor sample_next_tokens(const at::Tensor& logits, const SamplingOptions& options, const at::Tensor& uniforms) {
  TORCH_CHECK(logits.dim() == 2, "sample_next_tokens: logits must be [B, V]");
  TORCH_CHECK(uniforms.numel() == logits.size(0), "sample_next_tokens: ", uniforms.numel(), " uniforms for ",
              logits.size(0), " rows");
  if (options.temperature == 0.0) return logits.argmax(-1);
  // The CDF of the unnormalized weights; u is scaled by its own last value instead.
  const at::Tensor cdf = filtered_weights(logits, options).cumsum(-1);
  const at::Tensor total = cdf.narrow(-1, cdf.size(-1) - 1, 1);
  // Kept strictly below the total, so the first CDF value above it belongs to a token with mass:
  // a token of weight 0 never owns an interval.
  const at::Tensor targets = at::minimum(
      (uniforms.to(cdf.device(), at::kDouble).view({-1, 1}) * total).to(cdf.scalar_type()), at::nextafter(total, at::zeros_like(total)));
  // Non-finite logits (a diverged policy) give a NaN CDF that no target falls in: the index stays a
  // token id, and the run's guards (trainer.guards.*) report the divergence.
  return at::searchsorted(cdf, targets, /*out_int32=*/false, /*right=*/true).squeeze(1).clamp_max(logits.size(1) - 1);
}

at::Tensor sample_next_tokens(const at::Tensor& logits, const SamplingOptions& options,
                              const std::vector<uint64_t>& seeds, int64_t step) {
  std::vector<double> uniforms(seeds.size());
  for (size_t i = 0; i < seeds.size(); ++i) uniforms[i] = counter_uniform(seeds[i], step);
  return sample_next_tokens(logits, options, at::tensor(uniforms, at::kDouble));
}

TokenDraw sample_tokens_with_logprobs(const at::Tensor& logits, const SamplingOptions& options,
                                      const at::Tensor& uniforms) {
  if (options.temperature > 0 && draw_tokens_has_kernel(logits))
    return draw_tokens(logits, options.temperature, options.top_k, options.top_p, options.min_p, uniforms);
  at::Tensor tokens = sample_next_tokens(logits, options, uniforms);
  at::Tensor logprobs = sampling_logprobs(logits, tokens, options.temperature);
  return {std::move(tokens), std::move(logprobs)};
}

at::Tensor sampling_logprobs(const at::Tensor& logits, const at::Tensor& tokens, double temperature) {
  const at::Tensor scaled =
      temperature > 0 && temperature != 1.0 ? logits.to(at::kFloat) / temperature : logits.to(at::kFloat);
  // logsumexp and a gather: no [B, V] log-softmax is materialized.
  return scaled.gather(1, tokens.unsqueeze(1)).squeeze(1) - at::logsumexp(scaled, {-1});
}

}  // namespace grpo
