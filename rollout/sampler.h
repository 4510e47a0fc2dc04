#pragma once
// The sampler chain, as small free functions: temperature -> top-k -> top-p -> min-p -> draw.
// Draws use a counter-based generator keyed by (row seed, row step), so a sample's tokens depend
// on its own seed only, never on which other rows share the batch. Everything runs in float32
// (float64 logits stay float64) and nothing sorts the whole vocabulary: top-k is a partial
// selection, top-p a radix search for its probability threshold.

#include <cstdint>
#include <utility>
#include <vector>

#include <ATen/core/Tensor.h>

#include "kernels/token_sampling.h"

namespace grpo {

struct SamplingOptions {
  double temperature = 1.0;  // 0 = greedy (argmax)
  int64_t top_k = 0;         // keep the k most likely tokens (and any tied with the k-th); 0 = off
  double top_p = 1.0;        // keep the most likely tokens down to the one whose predecessors reach top_p
                             // of the mass (tokens tied with it kept too); 1 = off
  double min_p = 0.0;        // drop tokens below min_p * (probability of the most likely); 0 = off
};

// Probabilities [B, V] (float32, or float64 for float64 logits) after temperature and the filters;
// filtered tokens have probability 0 and the rest are renormalized. Requires temperature > 0.
at::Tensor filtered_probabilities(const at::Tensor& logits, const SamplingOptions& options);

// Per row [B, 1], the smallest probability top-p keeps: the largest value v such that the tokens
// with probability >= v carry at least `top_p` of the row's mass. Radix selection over the float32
// bit patterns (two histograms of 2^16 and 2^15 bins at large vocabularies), no sort.
// `probs` [B, V] float32, non-negative.
at::Tensor top_p_threshold(const at::Tensor& probs, double top_p);

// One token per row [B]: argmax when temperature == 0, else an inverse-CDF draw from
// filtered_probabilities with the uniform number of (seeds[row], step).
at::Tensor sample_next_tokens(const at::Tensor& logits, const SamplingOptions& options,
                              const std::vector<uint64_t>& seeds, int64_t step);

// The same draw with the uniform numbers given as a tensor [B] (float64, on the logits' device),
// so a caller can upload them ahead and never wait on the device.
at::Tensor sample_next_tokens(const at::Tensor& logits, const SamplingOptions& options, const at::Tensor& uniforms);

// Log-probability [B] of `tokens` under the sampling policy before the filters:
// log_softmax(logits / temperature) (plain log_softmax when greedy). This is what the trainer
// recomputes as old_logp.
at::Tensor sampling_logprobs(const at::Tensor& logits, const at::Tensor& tokens, double temperature);

// sample_next_tokens with the uniforms given, and sampling_logprobs of the drawn tokens, at once:
// the engine's draw of every decode step. Where kernels/token_sampling.h applies (float32 logits
// on an AVX-512 CPU, or CUDA logits with GRPO_CUDA_KERNELS=1; temperature > 0) its fused kernel
// draws, which equals this chain
// up to float32 rounding of the probabilities; elsewhere the chain itself runs. The log-probs are
// those of sampling_logprobs.
TokenDraw sample_tokens_with_logprobs(const at::Tensor& logits, const SamplingOptions& options,
                                          const at::Tensor& uniforms);

// The uniform number in [0, 1) of (seed, step): SplitMix64, 53 bits.
double counter_uniform(uint64_t seed, int64_t step);

}  // namespace grpo
