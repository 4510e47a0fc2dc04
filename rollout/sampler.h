#pragma once
// The sampler chain, as small free functions: temperature -> top-k -> top-p -> min-p -> draw.
// Draws use a counter-based generator keyed by (row seed, step), so a sample's tokens depend on
// its own seed only, never on which other rows share the batch.

#include <cstdint>
#include <vector>

#include <ATen/core/Tensor.h>

namespace grpo {

struct SamplingOptions {
  double temperature = 1.0;  // 0 = greedy (argmax)
  int64_t top_k = 0;         // keep the k most likely tokens; 0 = off
  double top_p = 1.0;        // keep the smallest set whose probability reaches top_p; 1 = off
  double min_p = 0.0;        // drop tokens below min_p * (probability of the most likely); 0 = off
};

// Probabilities [B, V] (float64 for exact CDFs) after temperature and the filters; filtered
// tokens have probability 0 and the rest are renormalized. Requires temperature > 0.
at::Tensor filtered_probabilities(const at::Tensor& logits, const SamplingOptions& options);

// One token per row [B]: argmax when temperature == 0, else an inverse-CDF draw from
// filtered_probabilities with the uniform number of (seeds[row], step).
at::Tensor sample_next_tokens(const at::Tensor& logits, const SamplingOptions& options,
                              const std::vector<uint64_t>& seeds, int64_t step);

// Log-probability [B] of `tokens` under the sampling policy before the filters:
// log_softmax(logits / temperature) (plain log_softmax when greedy). This is what the trainer
// recomputes as old_logp.
at::Tensor sampling_logprobs(const at::Tensor& logits, const at::Tensor& tokens, double temperature);

// The uniform number in [0, 1) of (seed, step): SplitMix64, 53 bits.
double counter_uniform(uint64_t seed, int64_t step);

}  // namespace grpo
