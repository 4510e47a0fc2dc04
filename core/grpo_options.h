#pragma once
// Options of the GRPO math (trainer/grpo_loss). Plain data: no tensors, no YAML.
// Each field's formula is in docs/algorithms.md; presets that set them are in core/config.cpp.

#include <cstdint>
#include <optional>

namespace grpo {

// How rewards of one prompt's G samples become advantages (the group mean is always subtracted).
enum class AdvantageScaling {
  kGroupStd,  // A = (r - mean_g) / (std_g + eps)          DeepSeekMath, verl, TRL scale_rewards=group
  kBatchStd,  // A = (r - mean_g) / (std_batch + eps)      TRL scale_rewards=batch
  kNone,      // A = r - mean_g                            Dr. GRPO
};

// What a group of one sample (G = 1) gets: there is no group to compare with.
enum class SingletonGroup {
  kZeroAdvantage,  // A = 0 (TRL): the sample teaches nothing.
  kRawReward,      // mean 0, std 1, so A = r / (1 + eps) (verl).
};

struct AdvantageOptions {
  AdvantageScaling scaling = AdvantageScaling::kGroupStd;
  bool std_unbiased = true;  // Bessel's correction (n - 1) in the standard deviation.
  double std_epsilon = 1e-6;  // Added to the std before dividing; keeps std = 0 groups at A = 0.
  SingletonGroup singleton_group = SingletonGroup::kRawReward;
};

enum class PolicyLossKind {
  kClip,   // PPO/GRPO clipped surrogate, with optional dual clip and ratio cap.
  kCispo,  // -stopgrad(min(ratio, eps_high)) * A * logp (MiniMax-M1).
  kSapo,   // -(sigmoid(tau (ratio - 1)) * 4 / tau) * A, tau by advantage sign.
};

struct PolicyLossOptions {
  PolicyLossKind kind = PolicyLossKind::kClip;
  double eps_low = 0.2;   // Ratios below 1 - eps_low stop moving for A < 0.
  double eps_high = 0.2;  // Ratios above 1 + eps_high stop moving for A > 0 (CISPO: the ratio cap).
  std::optional<double> log_ratio_clamp;  // Clamp logp - old_logp to [-c, c] before exp (verl: 20).
  std::optional<double> dual_clip_c;      // For A < 0, loss at most -A * c (verl: 3).
  std::optional<double> ratio_cap;        // Two-sided cap: unclipped ratio at most delta (INTELLECT-2).
  double sapo_tau_pos = 1.0;              // SAPO temperature for A > 0.
  double sapo_tau_neg = 1.05;             // SAPO temperature for A <= 0.
};

enum class KlEstimator {
  kK1,   // logp - ref
  kAbs,  // |logp - ref|
  kK2,   // (logp - ref)^2 / 2
  kK3,   // exp(ref - logp) - (ref - logp) - 1   (Schulman's low-variance estimator)
};

struct KlOptions {
  double beta = 0.001;  // Weight of the KL term; 0 skips the reference model entirely.
  KlEstimator estimator = KlEstimator::kK3;
  std::optional<double> log_ratio_clamp;  // k3 only: clamp ref - logp to [-c, c] first (verl: 20).
  std::optional<double> value_clamp;      // k3 only: clamp the estimate to [-c, c] (verl: 10).
};

// How the per-token loss matrix [N, T] becomes one scalar.
enum class LossAggregation {
  kTokenMean,            // sum(m X) / tokens
  kSeqMeanTokenSum,      // mean over sequences of sum_t(m X)
  kSeqMeanTokenMean,     // mean over sequences of sum_t(m X) / (n_i + seq_mean_epsilon)
  kSeqMeanTokenSumNorm,  // sum(m X) / loss_scale_factor (default: padded length T)
};

struct AggregationOptions {
  LossAggregation mode = LossAggregation::kSeqMeanTokenMean;
  // Whether sequences with no valid token count in the sequence mean (TRL: yes; verl: no).
  bool count_empty_sequences = false;
  // Added to n_i in seq-mean-token-mean (verl 1e-8; TRL 0). n_i is floored at 1 first.
  double seq_mean_epsilon = 1e-8;
  // seq-mean-token-sum-norm divisor; unset means the padded length T.
  std::optional<double> loss_scale_factor;
  // seq-mean-token-sum-norm only: also divide by the number of sequences (Dr. GRPO, TRL dr_grpo).
  bool norm_per_sequence = false;
};

}  // namespace grpo
