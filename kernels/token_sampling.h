#pragma once
// A decode step's draw in a few passes per row: softmax(logits / T), the top-k and top-p cuts
// (radix searches over the probabilities' bit patterns, by count and by float64 mass, no sort),
// the min-p cut, an inverse-CDF draw and the drawn token's log-prob under softmax(logits / T).
// The reference is rollout/sampler's chain of ATen operations (sample_next_tokens +
// sampling_logprobs), which makes about 20 passes over a [B, V] tensor and as many temporaries;
// this kernel makes three full passes per row (two more for top-k) and keeps its scratch in cache. CPU: float32 logits, AVX-512F; CUDA (draw_tokens_cuda): float32 or
// bfloat16 logits. Both: temperature > 0.

#include <ATen/core/Tensor.h>

namespace grpo {

struct TokenDraw {
  at::Tensor tokens;    // [B] long
  at::Tensor logprobs;  // [B] float32: log softmax(logits / temperature)[token], before the cuts
};

// True when draw_tokens can run for these logits (see above).
bool draw_tokens_has_kernel(const at::Tensor& logits);

// logits [B, V] float32; uniforms [B] float64 in [0, 1). Keeps the tokens whose probability p
// is at least the k-th largest (top_k; 0 or >= V = off; ties with it kept), of those the ones at
// or above the top-p threshold (the largest v such that the kept tokens with p >= v carry top_p
// of the kept mass; 1 = off), and at least min_p times the largest p (0 = off); then returns the
// first token whose running kept mass exceeds u times the kept total. rollout/sampler's chain
// (topk, sorted cumsum, searchsorted) gives the same tokens.
TokenDraw draw_tokens(const at::Tensor& logits, double temperature, int64_t top_k, double top_p, double min_p,
                      const at::Tensor& uniforms);

// The CUDA kernel (kernels/cuda), float32 or bfloat16 CUDA tensors; `draw_tokens` dispatches to it when
// runs_on_cuda_kernels (kernels/cuda_kernels.h). Its test compares it with the reference per dtype.
// One block per row; masses are exact 64-bit fixed-point sums, so a row's draw does not depend on
// thread scheduling. Tokens and log-probs come back on the logits' device.
TokenDraw draw_tokens_cuda(const at::Tensor& logits, double temperature, int64_t top_k, double top_p, double min_p,
                           const at::Tensor& uniforms);

}  // namespace grpo
