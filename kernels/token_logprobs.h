#pragma once
// Per-token log-probabilities and entropies through a language-model head without materializing
// the [N, C, V] float32 logits: tokens go through the head in chunks (logsumexp in float32,
// gather, entropy), and backward recomputes each chunk's logits instead of keeping them, so
// memory is O(chunk * V) whatever the number of tokens. ATen; on CUDA the statistics of each chunk
// may run on fused kernels (token_statistics_cuda below).

#include <cstdint>

#include <ATen/core/Tensor.h>

namespace grpo {

struct TokenLogprobsOptions {
  // Logits are divided by this before the softmax (sampling temperature); must be > 0.
  double temperature = 1.0;
  // Tokens per chunk; 0 picks one so that a chunk's float32 logits hold ~2^26 values (256 MiB).
  int64_t chunk_tokens = 0;
  // Also compute the entropy of the tempered distribution (costs one more pass over each chunk).
  bool with_entropy = true;
};

struct TokenLogprobs {
  at::Tensor logprobs;  // [...] float32: log softmax(hidden . W^T / temperature)[target]
  at::Tensor entropy;   // [...] float32 (undefined unless with_entropy): -sum p log p
};

// hidden [..., H] (any float dtype), head_weight [V, H] (same dtype; tied or untied), targets
// [...] long in [0, V), mask [...] bool or undefined (all true). Masked-out tokens get log-prob
// and entropy 0 and no gradient. Both outputs are differentiable w.r.t. hidden and head_weight.
TokenLogprobs token_logprobs(const at::Tensor& hidden, const at::Tensor& head_weight, const at::Tensor& targets,
                             const at::Tensor& mask = {}, const TokenLogprobsOptions& options = {});

// The CUDA kernels of one chunk (kernels/cuda/token_statistics.cu), float32 or bfloat16 logits
// [rows, V] on a CUDA device as the head's product left them: `token_logprobs` runs its chunks on
// them when runs_on_cuda_kernels (kernels/cuda_kernels.h), one read of the chunk's logits each way
// instead of about eight over a float32 copy. Forward: per row the logsumexp of z / T, the target's
// log-prob and the entropy (no mask applied). Backward: d(g . logprob + g_H . entropy) / dz in
// float32 [rows, V] (grad_entropy may be undefined).
struct TokenStatistics {
  at::Tensor logsumexp, logprobs, entropy;  // [rows] float32
};
TokenStatistics token_statistics_cuda(const at::Tensor& logits, const at::Tensor& targets, double temperature);
at::Tensor token_logit_gradients_cuda(const at::Tensor& logits, const at::Tensor& targets,
                                      const TokenStatistics& statistics, const at::Tensor& grad_logprobs,
                                      const at::Tensor& grad_entropy, double temperature);

// The plain path the chunked one must equal: full logits, log_softmax, gather. Memory O(N*C*V);
// kept for tests and benchmarks.
TokenLogprobs token_logprobs_unchunked(const at::Tensor& hidden, const at::Tensor& head_weight,
                                       const at::Tensor& targets, const at::Tensor& mask = {},
                                       const TokenLogprobsOptions& options = {});

}  // namespace grpo
