#pragma once
// The GRPO math: group advantages, per-token policy loss, KL to the reference, aggregation.
// Pure, vectorized tensor functions: no I/O, no communicator, no config parsing.
// Shapes: N = B*G sequences with each prompt's G samples consecutive; T = padded response length.
// Formulas and the peer each option reproduces: docs/algorithms.md.

#include <optional>

#include <ATen/core/Tensor.h>

#include "core/grpo_options.h"

namespace grpo {

// rewards [N] -> advantages [N]; rows i*G .. i*G+G-1 form group i. Requires N % G == 0.
at::Tensor group_advantages(const at::Tensor& rewards, int64_t group_size, const AdvantageOptions& options);

struct GrpoLossInputs {
  at::Tensor logp;        // [N, T] log-prob of each token under the policy being trained (carries grad)
  at::Tensor old_logp;    // [N, T] under the policy that sampled the tokens
  at::Tensor ref_logp;    // [N, T] under the reference policy; may be undefined when beta == 0
  at::Tensor advantages;  // [N] one per sequence, or [N, T] one per token (on-policy distillation)
  at::Tensor mask;        // [N, T] 1 where the token is a response token that counts (any dtype)
  at::Tensor is_weights;  // [N, T] rollout importance weights multiplying the policy loss; may be undefined
  // Global normalizers for data-parallel and accumulated batches: the number of valid tokens
  // (token-mean) or counted sequences (seq-mean-*) across every micro-batch and rank.
  // Unset: this batch's own count.
  std::optional<double> global_token_count;
  std::optional<double> global_sequence_count;
};

// On-policy distillation's per-token advantages [N, T], 0 at padding:
//   A_t = reward_weight * group_advantages[i] - coefficient * (student_logp - teacher_logp)
// student_logp [N, T]: the sampler's log-probs of the sampled tokens; teacher_logp [N, T]: the
// teacher's of the same tokens; group_advantages [N] (may be undefined when reward_weight == 0);
// mask [N, T] (any dtype). No discount: each token is rewarded by its own reverse-KL estimate only.
at::Tensor distillation_advantages(const at::Tensor& student_logp, const at::Tensor& teacher_logp, const at::Tensor& mask,
                                   const at::Tensor& group_advantages, const DistillationOptions& options);

// Per-token reverse-KL estimate log pi_student - log pi_teacher at valid tokens, 0 at padding: its mean
// over the student's samples estimates KL(student || teacher).
at::Tensor reverse_kl_per_token(const at::Tensor& student_logp, const at::Tensor& teacher_logp, const at::Tensor& mask);

struct GrpoLossOptions {
  PolicyLossOptions policy;
  KlOptions kl;
  AggregationOptions aggregation;
};

// All scalars are 0-dim tensors so that nothing in the hot path waits on the device.
struct GrpoLossMetrics {
  at::Tensor valid_tokens;      // number of valid tokens in this batch
  at::Tensor clip_frac_low;     // share of valid tokens clipped at 1 - eps_low with A < 0
  at::Tensor clip_frac_high;    // share clipped at 1 + eps_high with A > 0 (CISPO: ratio > eps_high)
  at::Tensor clip_frac;         // low + high
  at::Tensor dual_clip_frac;    // share of A < 0 tokens held at -A * c by the dual clip
  at::Tensor ratio_mean;        // mean importance ratio
  at::Tensor approx_kl_old;     // mean of old_logp - logp (after log_ratio_clamp): drift from the sampler
  at::Tensor kl_mean;           // mean per-token KL to the reference (0 when ref_logp is undefined)
  // Sequence level only (undefined at token level): shares of all N rows, empty ones included,
  // whose sequence ratio is clipped, as TRL counts them.
  at::Tensor row_clip_frac_low;
  at::Tensor row_clip_frac_high;
  at::Tensor row_clip_frac;
};

struct GrpoLossResult {
  at::Tensor loss;           // pg_loss + beta * kl_loss; back-propagate this
  at::Tensor pg_loss;        // aggregated policy loss
  at::Tensor kl_loss;        // aggregated KL (not multiplied by beta)
  at::Tensor ratio;          // [N, T] importance ratio; 0 at padding
  at::Tensor kl;             // [N, T] per-token KL; 0 at padding
  at::Tensor pg_loss_token;  // [N, T] per-token policy loss; 0 at padding
  GrpoLossMetrics metrics;
};

GrpoLossResult grpo_loss(const GrpoLossInputs& inputs, const GrpoLossOptions& options);

// Per-token KL estimate of the policy to the reference at valid tokens; 0 at padding.
at::Tensor kl_per_token(const at::Tensor& logp, const at::Tensor& ref_logp, const at::Tensor& valid,
                        const KlOptions& options);

// Aggregates a per-token matrix that is already 0 at padding. `valid` is the boolean mask.
at::Tensor aggregate_loss(const at::Tensor& per_token, const at::Tensor& valid, const AggregationOptions& options,
                          std::optional<double> global_token_count = std::nullopt,
                          std::optional<double> global_sequence_count = std::nullopt);

// How far the sampler's log-probs are from the trainer's at the valid tokens, as sums so that
// ranks and micro-batches add up. With q = trainer_logp - sampling_logp: |q| and the k3 estimate
// exp(q) - 1 - q of KL(sampler || trainer) (>= 0, unbiased for tokens the sampler drew).
struct LogpMismatch {
  at::Tensor tokens;        // number of valid tokens
  at::Tensor abs_diff_sum;  // sum of |q|
  at::Tensor abs_diff_max;  // max of |q| (0 when there is no valid token)
  at::Tensor kl_sum;        // sum of exp(q) - 1 - q
};
LogpMismatch logp_mismatch(const at::Tensor& trainer_logp, const at::Tensor& sampling_logp, const at::Tensor& mask);

// Exact metrics of the rollout correction (0-dim tensors). "Raw" weights are before the bounds.
struct RolloutCorrectionMetrics {
  at::Tensor raw_weight_mean;   // mean raw weight over valid tokens (a sequence weight counts once per token)
  at::Tensor raw_above_frac;    // share with raw weight > weight_max: of valid tokens (token level) or rows (sequence)
  at::Tensor raw_below_frac;    // share below weight_min (1 / weight_max when weight_min is unset), same units
  at::Tensor weight_min;        // final weights over valid tokens (token level) or all N rows (sequence level)
  at::Tensor weight_mean;
  at::Tensor weight_max;
  at::Tensor batch_norm_factor; // the mean the weights were divided by; 1 when not normalizing
  at::Tensor rejected_frac;     // share of valid tokens that rejection sampling removed
};

struct RolloutCorrection {
  at::Tensor weights;  // [N, T] weight per token, 0 at padding; undefined when options.level is none
  at::Tensor mask;     // [N, T] bool: the input mask without the rejected tokens. It replaces the mask
                       // everywhere after this (the loss, its normalizers, its metrics).
  RolloutCorrectionMetrics metrics;
};

// Importance weights pi_old / pi_sampler and rejection sampling from the sampler's log-probs
// (formulas in docs/algorithms.md). old_logp, sampling_logp, mask: [N, T]. No gradient flows.
RolloutCorrection rollout_correction(const at::Tensor& old_logp, const at::Tensor& sampling_logp, const at::Tensor& mask,
                                     const RolloutCorrectionOptions& options);

}  // namespace grpo
