#include "trainer/grpo_loss.h"

#include <algorithm>
#include <cmath>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>

namespace grpo {
namespace {

// Number of valid entries as a floating scalar, floored at 1 so that empty batches give 0, not NaN.
at::Tensor count_at_least_one(const at::Tensor& valid, c10::ScalarType dtype) {
  return valid.sum().to(dtype).clamp_min(1.0);
}

at::Tensor masked_fraction(const at::Tensor& flags, const at::Tensor& valid, const at::Tensor& denominator) {
  return (flags & valid).sum().to(denominator.scalar_type()) / denominator;
}

}  // namespace

at::Tensor group_advantages(const at::Tensor& rewards, int64_t group_size, const AdvantageOptions& options) {
  TORCH_CHECK(rewards.dim() == 1, "group_advantages: rewards must be [N], got ", rewards.sizes());
  TORCH_CHECK(group_size >= 1 && rewards.size(0) % group_size == 0, "group_advantages: N = ", rewards.size(0),
              " is not a multiple of group_size = ", group_size);
  const at::Tensor grouped = rewards.view({-1, group_size});  // [B, G]

  if (group_size == 1) {
    if (options.singleton_group == SingletonGroup::kZeroAdvantage) return at::zeros_like(rewards);
    // verl: a lone sample is compared with mean 0 and std 1.
    return options.scaling == AdvantageScaling::kNone ? rewards.clone() : rewards / (1.0 + options.std_epsilon);
  }

  const at::Tensor centred = (grouped - grouped.mean(1, /*keepdim=*/true)).view({-1});
  switch (options.scaling) {
    case AdvantageScaling::kNone:
      return centred;
    case AdvantageScaling::kGroupStd: {
      const at::Tensor std = grouped.std(1, options.std_unbiased, /*keepdim=*/true);  // [B, 1]
      return centred / (std.expand_as(grouped).reshape({-1}) + options.std_epsilon);
    }
    case AdvantageScaling::kBatchStd: {
      const bool single = rewards.size(0) < 2 && options.std_unbiased;
      const at::Tensor std = single ? at::zeros({}, rewards.options()) : rewards.std(options.std_unbiased);
      return centred / (std + options.std_epsilon);
    }
  }
  TORCH_CHECK(false, "group_advantages: unknown scaling");
}

at::Tensor kl_per_token(const at::Tensor& logp, const at::Tensor& ref_logp, const at::Tensor& valid,
                        const KlOptions& options) {
  // Padding log-probs are arbitrary, so they are replaced before any arithmetic can overflow.
  const at::Tensor diff = at::where(valid, logp - ref_logp, at::zeros({}, logp.options()));  // logp - ref
  at::Tensor kl;
  switch (options.estimator) {
    case KlEstimator::kK1:
      kl = diff;
      break;
    case KlEstimator::kAbs:
      kl = diff.abs();
      break;
    case KlEstimator::kK2:
      kl = 0.5 * diff * diff;
      break;
    case KlEstimator::kK3: {
      at::Tensor log_ratio = -diff;  // ref - logp
      if (options.log_ratio_clamp) log_ratio = log_ratio.clamp(-*options.log_ratio_clamp, *options.log_ratio_clamp);
      kl = log_ratio.exp() - log_ratio - 1.0;
      if (options.value_clamp) kl = kl.clamp(-*options.value_clamp, *options.value_clamp);
      break;
    }
  }
  return at::where(valid, kl, at::zeros({}, kl.options()));
}

at::Tensor aggregate_loss(const at::Tensor& per_token, const at::Tensor& valid, const AggregationOptions& options,
                          std::optional<double> global_token_count, std::optional<double> global_sequence_count) {
  const auto dtype = per_token.scalar_type();
  const at::Tensor tokens_per_row = valid.sum(1);  // [N]
  const at::Tensor row_has_tokens = tokens_per_row > 0;
  const auto sequence_count = [&]() -> at::Tensor {
    if (global_sequence_count) return at::scalar_tensor(std::max(*global_sequence_count, 1.0), per_token.options());
    if (options.count_empty_sequences)
      return at::scalar_tensor(std::max<double>(static_cast<double>(per_token.size(0)), 1.0), per_token.options());
    return count_at_least_one(row_has_tokens, dtype);
  };

  switch (options.mode) {
    case LossAggregation::kTokenMean: {
      const at::Tensor tokens = global_token_count
                                    ? at::scalar_tensor(std::max(*global_token_count, 1.0), per_token.options())
                                    : count_at_least_one(valid, dtype);
      return per_token.sum() / tokens;
    }
    case LossAggregation::kSeqMeanTokenSum:
      return per_token.sum(1).sum() / sequence_count();
    case LossAggregation::kSeqMeanTokenMean: {
      const at::Tensor lengths = tokens_per_row.to(dtype).clamp_min(1.0) + options.seq_mean_epsilon;
      return (per_token.sum(1) / lengths).sum() / sequence_count();
    }
    case LossAggregation::kSeqMeanTokenSumNorm: {
      const double scale = options.loss_scale_factor.value_or(static_cast<double>(per_token.size(1)));
      at::Tensor loss = per_token.sum() / scale;
      if (options.norm_per_sequence) loss = loss / sequence_count();
      return loss;
    }
  }
  TORCH_CHECK(false, "aggregate_loss: unknown mode");
}

GrpoLossResult grpo_loss(const GrpoLossInputs& in, const GrpoLossOptions& options) {
  TORCH_CHECK(in.logp.dim() == 2, "grpo_loss: logp must be [N, T], got ", in.logp.sizes());
  TORCH_CHECK(in.old_logp.sizes() == in.logp.sizes() && in.mask.sizes() == in.logp.sizes(),
              "grpo_loss: logp, old_logp and mask must have one shape; got ", in.logp.sizes(), ", ",
              in.old_logp.sizes(), ", ", in.mask.sizes());
  TORCH_CHECK((in.advantages.dim() == 1 && in.advantages.size(0) == in.logp.size(0)) ||
                  in.advantages.sizes() == in.logp.sizes(),
              "grpo_loss: advantages must be [N] or [N, T] with [N, T] = ", in.logp.sizes(), ", got ",
              in.advantages.sizes());
  const bool use_kl = in.ref_logp.defined();
  TORCH_CHECK(use_kl || options.kl.beta == 0.0, "grpo_loss: beta = ", options.kl.beta, " needs ref_logp");
  TORCH_CHECK(!use_kl || in.ref_logp.sizes() == in.logp.sizes(), "grpo_loss: ref_logp must be ", in.logp.sizes(),
              ", got ", in.ref_logp.sizes());

  const PolicyLossOptions& policy = options.policy;
  const at::Tensor valid = in.mask.to(at::kBool);
  const at::Tensor zero = at::zeros({}, in.logp.options());
  // [N, 1] for sequence advantages, [N, T] for per-token ones; either broadcasts over [N, T].
  const at::Tensor advantage =
      in.advantages.dim() == 1 ? in.advantages.to(in.logp.scalar_type()).unsqueeze(1) : in.advantages.to(in.logp.scalar_type());
  const at::Tensor positive = (advantage > 0).expand_as(valid);
  const at::Tensor negative = (advantage < 0).expand_as(valid);

  // log_ratio is what the ratio is exp of ([N, T], or [N, 1] at sequence level) and drift_log_ratio
  // the per-token log-ratio behind approx_kl_old.
  const at::Tensor token_log_ratio = at::where(valid, in.logp - in.old_logp, zero);
  at::Tensor log_ratio, drift_log_ratio = token_log_ratio;
  if (policy.importance_level == ImportanceLevel::kSequence) {
    // GSPO: the mean log-ratio of the row. Its gradient reaches each valid token as rho_i / n_i,
    // which aggregated over the row's n_i tokens equals verl's stop-gradient token form.
    log_ratio = token_log_ratio.sum(1, /*keepdim=*/true) / valid.sum(1, /*keepdim=*/true).to(in.logp.scalar_type()).clamp_min(1.0);
    if (policy.sequence_log_ratio_cap) log_ratio = log_ratio.clamp_max(*policy.sequence_log_ratio_cap);
  } else {
    log_ratio = token_log_ratio;
    if (policy.log_ratio_clamp) log_ratio = log_ratio.clamp(-*policy.log_ratio_clamp, *policy.log_ratio_clamp);
    drift_log_ratio = log_ratio;
  }
  const at::Tensor ratio = log_ratio.exp().expand_as(in.logp);

  at::Tensor pg;  // [N, T], nonzero only at valid tokens
  at::Tensor clipped_low = at::zeros_like(valid);
  at::Tensor clipped_high = at::zeros_like(valid);
  at::Tensor dual_clipped = at::zeros_like(valid);
  switch (policy.kind) {
    case PolicyLossKind::kClip: {
      const at::Tensor capped = policy.ratio_cap ? at::minimum(ratio, at::scalar_tensor(*policy.ratio_cap, ratio.options()))
                                                 : ratio;
      const at::Tensor unclipped_loss = -advantage * capped;
      const at::Tensor clipped_loss = -advantage * ratio.clamp(1.0 - policy.eps_low, 1.0 + policy.eps_high);
      const at::Tensor clip_active = clipped_loss > unclipped_loss;
      clipped_low = clip_active & negative;
      clipped_high = clip_active & positive;
      pg = at::maximum(unclipped_loss, clipped_loss);
      if (policy.dual_clip_c) {
        const at::Tensor floor_loss = -advantage * *policy.dual_clip_c;  // [N, 1]
        dual_clipped = (pg > floor_loss) & negative;
        pg = at::where(negative, at::minimum(pg, floor_loss), pg);
      }
      break;
    }
    case PolicyLossKind::kCispo: {
      const at::Tensor weight = ratio.clamp_max(policy.eps_high).detach();
      pg = -weight * advantage * at::where(valid, in.logp, zero);
      clipped_high = (ratio > policy.eps_high) & positive;
      break;
    }
    case PolicyLossKind::kSapo: {
      const at::Tensor tau = at::where(advantage > 0, at::scalar_tensor(policy.sapo_tau_pos, ratio.options()),
                                       at::scalar_tensor(policy.sapo_tau_neg, ratio.options()));
      pg = -(at::sigmoid(tau * (ratio - 1.0)) * 4.0 / tau) * advantage;
      break;
    }
  }
  if (in.is_weights.defined()) pg = pg * in.is_weights.detach().to(pg.scalar_type());  // after every clip
  pg = at::where(valid, pg, zero);

  GrpoLossResult result;
  result.pg_loss_token = pg;
  result.ratio = at::where(valid, ratio, zero);
  result.pg_loss = aggregate_loss(pg, valid, options.aggregation, in.global_token_count, in.global_sequence_count);
  if (use_kl) {
    AggregationOptions kl_aggregation = options.aggregation;
    if (kl_aggregation.kl_mode) kl_aggregation.mode = *kl_aggregation.kl_mode;
    result.kl = kl_per_token(in.logp, in.ref_logp, valid, options.kl);
    result.kl_loss = aggregate_loss(result.kl, valid, kl_aggregation, in.global_token_count, in.global_sequence_count);
    result.loss = options.kl.beta == 0.0 ? result.pg_loss : result.pg_loss + options.kl.beta * result.kl_loss;
  } else {
    result.kl = at::zeros_like(pg);
    result.kl_loss = at::zeros({}, pg.options());
    result.loss = result.pg_loss;
  }

  GrpoLossMetrics& m = result.metrics;
  m.valid_tokens = valid.sum();
  const at::Tensor tokens = count_at_least_one(valid, pg.scalar_type());
  m.clip_frac_low = masked_fraction(clipped_low, valid, tokens);
  m.clip_frac_high = masked_fraction(clipped_high, valid, tokens);
  m.clip_frac = masked_fraction(clipped_low | clipped_high, valid, tokens);
  m.dual_clip_frac = masked_fraction(dual_clipped, valid, tokens);
  m.ratio_mean = result.ratio.detach().sum() / tokens;
  m.approx_kl_old = -drift_log_ratio.detach().sum() / tokens;
  m.kl_mean = result.kl.detach().sum() / tokens;
  if (policy.importance_level == ImportanceLevel::kSequence) {
    // A row's tokens share one ratio, so a row is clipped when any of its tokens is.
    const at::Tensor rows = at::scalar_tensor(std::max<double>(static_cast<double>(valid.size(0)), 1.0), pg.options());
    const auto row_share = [&](const at::Tensor& flags) { return (flags & valid).any(1).sum().to(pg.scalar_type()) / rows; };
    m.row_clip_frac_low = row_share(clipped_low);
    m.row_clip_frac_high = row_share(clipped_high);
    m.row_clip_frac = row_share(clipped_low | clipped_high);
  }
  return result;
}

at::Tensor reverse_kl_per_token(const at::Tensor& student_logp, const at::Tensor& teacher_logp, const at::Tensor& mask) {
  TORCH_CHECK(student_logp.dim() == 2 && teacher_logp.sizes() == student_logp.sizes() && mask.sizes() == student_logp.sizes(),
              "reverse_kl_per_token: student_logp, teacher_logp and mask must be one [N, T] shape; got ",
              student_logp.sizes(), ", ", teacher_logp.sizes(), ", ", mask.sizes());
  const at::Tensor valid = mask.to(at::kBool);
  // Padding log-probs are arbitrary, so they are replaced before the subtraction.
  return at::where(valid, student_logp.detach() - teacher_logp.detach().to(student_logp.scalar_type()),
                   at::zeros({}, student_logp.options()));
}

at::Tensor distillation_advantages(const at::Tensor& student_logp, const at::Tensor& teacher_logp, const at::Tensor& mask,
                                   const at::Tensor& group_advantages, const DistillationOptions& options) {
  at::Tensor advantages = -options.coefficient * reverse_kl_per_token(student_logp, teacher_logp, mask);
  if (options.reward_weight != 0.0) {
    TORCH_CHECK(group_advantages.defined() && group_advantages.dim() == 1 &&
                    group_advantages.size(0) == student_logp.size(0),
                "distillation_advantages: reward_weight = ", options.reward_weight, " needs group_advantages [N] with N = ",
                student_logp.size(0));
    const at::Tensor sequence = group_advantages.to(advantages.scalar_type()).unsqueeze(1);  // [N, 1]
    advantages = advantages + at::where(mask.to(at::kBool), options.reward_weight * sequence, at::zeros({}, advantages.options()));
  }
  return advantages;
}

LogpMismatch logp_mismatch(const at::Tensor& trainer_logp, const at::Tensor& sampling_logp, const at::Tensor& mask) {
  TORCH_CHECK(trainer_logp.sizes() == sampling_logp.sizes() && mask.sizes() == trainer_logp.sizes(),
              "logp_mismatch: trainer_logp, sampling_logp and mask must have one shape; got ", trainer_logp.sizes(), ", ",
              sampling_logp.sizes(), ", ", mask.sizes());
  const at::Tensor valid = mask.to(at::kBool);
  const at::Tensor q = at::where(valid, trainer_logp.detach() - sampling_logp.to(trainer_logp.scalar_type()),
                                 at::zeros({}, trainer_logp.options()));
  LogpMismatch out;
  out.tokens = valid.sum();
  out.abs_diff_sum = q.abs().sum();
  out.abs_diff_max = q.numel() > 0 ? q.abs().max() : at::zeros({}, q.options());  // padding is 0, |q| >= 0
  const at::Tensor q64 = q.to(at::kDouble);  // e^q - 1 - q ~ q^2/2 vanishes in fp32 for fp32-sized gaps
  out.kl_sum = (q64.exp() - 1.0 - q64).sum();                                         // 0 at padding
  return out;
}

namespace {

// Per-token value of one rejection statistic's kernel (k1, k2 or k3) of c; 0 at padding.
at::Tensor rejection_kernel(RejectionStatistic statistic, const at::Tensor& c) {
  switch (statistic) {
    case RejectionStatistic::kTokenK1: case RejectionStatistic::kSeqSumK1: case RejectionStatistic::kSeqMeanK1:
      return -c;
    case RejectionStatistic::kTokenK2: case RejectionStatistic::kSeqSumK2: case RejectionStatistic::kSeqMeanK2:
    case RejectionStatistic::kSeqMaxK2:
      return 0.5 * c * c;
    default:
      return c.exp() - 1.0 - c;
  }
}

// The statistic a rule tests, [N, T] for token rules or [N, 1] for sequence rules.
at::Tensor rejection_statistic(RejectionStatistic statistic, const at::Tensor& c, const at::Tensor& valid) {
  const at::Tensor kernel = at::where(valid, rejection_kernel(statistic, c), at::zeros({}, c.options()));
  switch (statistic) {
    case RejectionStatistic::kTokenK1: case RejectionStatistic::kTokenK2: case RejectionStatistic::kTokenK3:
      return kernel;
    case RejectionStatistic::kSeqSumK1: case RejectionStatistic::kSeqSumK2: case RejectionStatistic::kSeqSumK3:
      return kernel.sum(1, /*keepdim=*/true);
    case RejectionStatistic::kSeqMeanK1: case RejectionStatistic::kSeqMeanK2: case RejectionStatistic::kSeqMeanK3:
      return kernel.sum(1, /*keepdim=*/true) / (valid.sum(1, /*keepdim=*/true).to(c.scalar_type()) + 1e-8);
    case RejectionStatistic::kSeqMaxK2: case RejectionStatistic::kSeqMaxK3:
      return std::get<0>(kernel.max(1, /*keepdim=*/true));  // k2, k3 >= 0, so padding's 0 never wins wrongly
  }
  TORCH_CHECK(false, "rejection_statistic: unknown statistic");
}

bool is_k1(RejectionStatistic s) {
  return s == RejectionStatistic::kTokenK1 || s == RejectionStatistic::kSeqSumK1 || s == RejectionStatistic::kSeqMeanK1;
}

}  // namespace

RolloutCorrection rollout_correction(const at::Tensor& old_logp, const at::Tensor& sampling_logp, const at::Tensor& mask,
                                     const RolloutCorrectionOptions& options) {
  TORCH_CHECK(old_logp.dim() == 2 && sampling_logp.sizes() == old_logp.sizes() && mask.sizes() == old_logp.sizes(),
              "rollout_correction: old_logp, sampling_logp and mask must be one [N, T] shape; got ", old_logp.sizes(),
              ", ", sampling_logp.sizes(), ", ", mask.sizes());
  at::NoGradGuard no_grad;
  const at::Tensor valid = mask.to(at::kBool);
  const auto dtype = old_logp.scalar_type();
  const at::Tensor zero = at::zeros({}, old_logp.options());
  const at::Tensor tokens = valid.sum().to(dtype);
  const at::Tensor tokens_at_least_one = tokens.clamp_min(1.0);
  at::Tensor q = at::where(valid, old_logp.detach() - sampling_logp.to(dtype), zero);  // log(pi_old / pi_sampler)
  if (options.log_weight_clamp) q = q.clamp(-*options.log_weight_clamp, *options.log_weight_clamp);

  RolloutCorrection out;
  RolloutCorrectionMetrics& m = out.metrics;
  const at::Tensor one = at::ones({}, old_logp.options());
  m.raw_weight_mean = one;
  m.raw_above_frac = m.raw_below_frac = zero;
  m.weight_min = m.weight_mean = m.weight_max = m.batch_norm_factor = one;
  if (options.level != CorrectionLevel::kNone) {
    const bool sequence = options.level == CorrectionLevel::kSequence;
    at::Tensor log_w = sequence ? at::where(valid, old_logp.detach() - sampling_logp.to(dtype), zero).sum(1, true) : q;
    if (sequence && options.log_weight_clamp) log_w = log_w.clamp(-*options.log_weight_clamp, *options.log_weight_clamp);
    const at::Tensor raw = log_w.exp();  // [N, T] or [N, 1]
    const at::Tensor raw_tokens = raw.expand_as(q);
    m.raw_weight_mean = at::where(valid, raw_tokens, zero).sum() / tokens_at_least_one;

    // The metrics count tokens at token level and rows (empty ones too) at sequence level.
    const at::Tensor counted = sequence ? at::ones_like(raw, at::kBool) : valid;
    const at::Tensor counted_number = sequence ? at::scalar_tensor(std::max<double>(double(raw.size(0)), 1.0), old_logp.options())
                                               : tokens_at_least_one;
    const auto share = [&](const at::Tensor& flags) { return (flags & counted).sum().to(dtype) / counted_number; };
    const std::optional<double> lower_edge =
        options.weight_min ? options.weight_min : (options.weight_max ? std::optional<double>(1.0 / *options.weight_max) : std::nullopt);
    if (options.weight_max) m.raw_above_frac = share(raw > *options.weight_max);
    if (lower_edge) m.raw_below_frac = share(raw < *lower_edge);

    at::Tensor w = raw;
    if (options.bounds == WeightBounds::kTruncate) {
      if (options.weight_min) w = w.clamp_min(*options.weight_min);
      if (options.weight_max) w = w.clamp_max(*options.weight_max);
    } else {
      at::Tensor outside = at::zeros_like(w, at::kBool);
      if (options.weight_min) outside = outside | (w < *options.weight_min);
      if (options.weight_max) outside = outside | (w > *options.weight_max);
      w = at::where(outside, zero, w);
    }
    if (options.batch_normalize) {
      // verl: the token mean, or at sequence level the mean over non-empty rows of each row's token mean.
      const at::Tensor w_tokens = at::where(valid, w.expand_as(q), zero);
      at::Tensor mean;
      if (sequence) {
        const at::Tensor n_i = valid.sum(1).to(dtype);
        const at::Tensor rows = (n_i > 0).sum().to(dtype).clamp_min(1.0);
        mean = (w_tokens.sum(1) / (n_i + 1e-8)).sum() / rows;
      } else {
        mean = w_tokens.sum() / (tokens + 1e-8);
      }
      if (mean.item<double>() > 1e-8) {
        w = w / mean;
        m.batch_norm_factor = mean;
      }
    }
    const at::Tensor w_counted = sequence ? w.view({-1}) : w.masked_select(valid);
    if (w_counted.numel() > 0) {
      m.weight_min = w_counted.min();
      m.weight_mean = w_counted.mean();
      m.weight_max = w_counted.max();
    }
    out.weights = at::where(valid, w.expand_as(q), zero);
  }

  at::Tensor keep = at::ones_like(valid);
  for (const RejectionRule& rule : options.rejection) {
    const at::Tensor stat = rejection_statistic(rule.statistic, q, valid);
    at::Tensor kept = at::ones_like(stat, at::kBool);
    const bool ratio_bounds = is_k1(rule.statistic);  // k1 bounds are on exp(k1) = pi_sampler / pi_old
    if (rule.lower) kept = kept & (stat >= (ratio_bounds ? std::log(*rule.lower) : *rule.lower));
    if (rule.upper) kept = kept & (stat <= (ratio_bounds ? std::log(*rule.upper) : *rule.upper));
    keep = keep & kept.expand_as(valid);
  }
  out.mask = valid & keep;
  m.rejected_frac = (valid & ~keep).sum().to(dtype) / tokens_at_least_one;
  return out;
}

}  // namespace grpo
