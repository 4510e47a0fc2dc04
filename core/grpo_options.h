#pragma once
// Options of the GRPO math (trainer/grpo_loss). Plain data: no tensors, no YAML.
// Each field's formula is in docs/algorithms.md; presets that set them are in core/config.cpp.

#include <cstdint>
#include <optional>
#include <vector>

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

// Which importance ratio the policy loss uses.
enum class ImportanceLevel {
  kToken,     // rho_it = exp(logp_it - old_it)                                        PPO, GRPO
  kSequence,  // rho_i = exp(sum_t m (logp - old) / max(n_i, 1)) on every token of row i    GSPO
};

struct PolicyLossOptions {
  PolicyLossKind kind = PolicyLossKind::kClip;
  ImportanceLevel importance_level = ImportanceLevel::kToken;
  double eps_low = 0.2;   // Ratios below 1 - eps_low stop moving for A < 0.
  double eps_high = 0.2;  // Ratios above 1 + eps_high stop moving for A > 0 (CISPO: the ratio cap).
  std::optional<double> log_ratio_clamp;  // Token level: clamp logp - old_logp to [-c, c] before exp (verl: 20).
  std::optional<double> sequence_log_ratio_cap;  // Sequence level: the mean log-ratio is at most this (verl GSPO: 10).
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
  // How the KL term is aggregated; unset = like the policy loss. verl's GSPO aggregates its policy
  // loss seq-mean-token-mean but the KL with loss_agg_mode.
  std::optional<LossAggregation> kl_mode;
};

// Rollout importance-sampling correction: the tokens were drawn by a sampler whose log-probs
// (sampling_logp) may differ from the trainer's old_logp (another engine, another precision, a
// stale policy). q = old_logp - sampling_logp per valid token; the weight pi_old / pi_sampler
// multiplies the policy loss (never the KL term) and carries no gradient.
enum class CorrectionLevel {
  kNone,      // no weights
  kToken,     // w_it = exp(q_it)                     (verl rollout_is: token; TRL token_*)
  kSequence,  // w_i = exp(sum_t m q) on every token  (verl rollout_is: sequence; TRL sequence_*)
};

// What happens to a weight outside [weight_min, weight_max].
enum class WeightBounds {
  kTruncate,  // clamped to the bound (truncated IS, TIS)
  kMask,      // set to 0, the token stays in every denominator (masked IS, TRL *_mask)
};

// Per-token statistic of log(pi_old / pi_sampler) that rejection sampling tests, with
// c = q (clamped by log_weight_clamp): k1 = -c, k2 = c^2 / 2, k3 = exp(c) - 1 - c. token_*
// tests each token; seq_sum_* the row's sum, seq_mean_* the sum / (n_i + 1e-8), seq_max_* the
// row's largest value; a sequence test keeps or drops the whole row.
enum class RejectionStatistic {
  kTokenK1, kTokenK2, kTokenK3,
  kSeqSumK1, kSeqSumK2, kSeqSumK3,
  kSeqMeanK1, kSeqMeanK2, kSeqMeanK3,
  kSeqMaxK2, kSeqMaxK3,
};

// Keeps a token only when its statistic lies within the bounds. For k1 statistics the bounds apply to
// exp(statistic) = pi_sampler / pi_old (a ratio, so lower < 1 < upper); for k2/k3 to the statistic
// itself. Unset bounds are not applied.
struct RejectionRule {
  RejectionStatistic statistic = RejectionStatistic::kTokenK1;
  std::optional<double> lower;
  std::optional<double> upper;
};

struct RolloutCorrectionOptions {
  CorrectionLevel level = CorrectionLevel::kNone;
  WeightBounds bounds = WeightBounds::kTruncate;
  std::optional<double> weight_min;  // lower bound of the weight; unset = none
  std::optional<double> weight_max;  // upper bound of the weight (verl rollout_is_threshold); unset = none
  std::optional<double> log_weight_clamp;  // clamp q (token) or sum_t q (sequence) to [-c, c] first (verl: 20)
  bool batch_normalize = false;  // divide the bounded weights by their mean over the batch (verl)
  std::vector<RejectionRule> rejection;  // every rule must keep a token; rejected tokens leave the mask
  bool enabled() const { return level != CorrectionLevel::kNone || !rejection.empty(); }
};

// On-policy distillation: per-token advantages from the reverse KL to a teacher on the tokens the
// student sampled, A_t = reward_weight * A_group - coefficient * (log pi_student(y_t) - log pi_teacher(y_t)).
struct DistillationOptions {
  double coefficient = 1.0;    // weight of the reverse-KL term
  double reward_weight = 0.0;  // weight of the group-normalized rule-reward advantage; 0 = pure distillation
};

}  // namespace grpo
