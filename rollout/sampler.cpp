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

}  // namespace

double counter_uniform(uint64_t seed, int64_t step) {
  const uint64_t bits = splitmix64(seed ^ splitmix64(static_cast<uint64_t>(step)));
  return static_cast<double>(bits >> 11) * (1.0 / 9007199254740992.0);
}

at::Tensor filtered_probabilities(const at::Tensor& logits, const SamplingOptions& options) {
  TORCH_CHECK(options.temperature > 0, "filtered_probabilities: temperature must be > 0");
  at::Tensor probs = at::softmax(logits.to(at::kDouble) / options.temperature, -1);  // [B, V]
  const int64_t vocab = probs.size(-1);
  if (options.top_k > 0 && options.top_k < vocab) {
    const at::Tensor kth = std::get<0>(probs.topk(options.top_k, -1)).narrow(-1, options.top_k - 1, 1);
    probs = probs.masked_fill(probs < kth, 0.0);
  }
  if (options.top_p < 1.0) {
    auto [sorted, order] = probs.sort(-1, /*descending=*/true);
    const at::Tensor total = sorted.sum(-1, true);
    // A token is dropped when the tokens before it already reach top_p of the remaining mass.
    const at::Tensor before = sorted.cumsum(-1) - sorted;
    const at::Tensor drop_sorted = before >= options.top_p * total;
    probs = probs.masked_fill(at::zeros_like(drop_sorted).scatter(-1, order, drop_sorted), 0.0);
  }
  if (options.min_p > 0.0) {
    const at::Tensor top = std::get<0>(probs.max(-1, true));
    probs = probs.masked_fill(probs < options.min_p * top, 0.0);
  }
  return probs / probs.sum(-1, true);
}

at::Tensor sample_next_tokens(const at::Tensor& logits, const SamplingOptions& options,
                              const std::vector<uint64_t>& seeds, int64_t step) {
  TORCH_CHECK(logits.dim() == 2, "sample_next_tokens: logits must be [B, V]");
  TORCH_CHECK(static_cast<int64_t>(seeds.size()) == logits.size(0), "sample_next_tokens: ", seeds.size(),
              " seeds for ", logits.size(0), " rows");
  if (options.temperature == 0.0) return logits.argmax(-1);
  const at::Tensor probs = filtered_probabilities(logits, options);
  std::vector<double> uniforms(seeds.size());
  for (size_t i = 0; i < seeds.size(); ++i) uniforms[i] = counter_uniform(seeds[i], step);
  const at::Tensor cdf = probs.cumsum(-1);
  const at::Tensor targets = at::tensor(uniforms, at::kDouble).to(cdf.device()).unsqueeze(1);
  // First index whose CDF exceeds u; tokens with probability 0 never own an interval.
  const at::Tensor index = at::searchsorted(cdf, targets, /*out_int32=*/false, /*right=*/true).squeeze(1);
  at::Tensor tokens = index.clamp_max(probs.size(-1) - 1);
  // Rounding can leave u above the last CDF value: fall back to the last token with mass.
  const at::Tensor last_nonzero = (probs > 0).to(at::kLong).cumsum(-1).argmax(-1);
  const at::Tensor chosen_zero = probs.gather(1, tokens.unsqueeze(1)).squeeze(1) == 0;
  return at::where(chosen_zero, last_nonzero, tokens);
}

at::Tensor sampling_logprobs(const at::Tensor& logits, const at::Tensor& tokens, double temperature) {
  const at::Tensor scaled = temperature > 0 ? logits.to(at::kFloat) / temperature : logits.to(at::kFloat);
  return at::log_softmax(scaled, -1).gather(1, tokens.unsqueeze(1)).squeeze(1);
}

}  // namespace grpo
