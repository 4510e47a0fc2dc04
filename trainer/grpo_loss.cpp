#include "trainer/grpo_loss.h"

#include <ATen/ATen.h>

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
  TORCH_CHECK(in.advantages.dim() == 1 && in.advantages.size(0) == in.logp.size(0),
              "grpo_loss: advantages must be [N] with N = ", in.logp.size(0), ", got ", in.advantages.sizes());
  const bool use_kl = in.ref_logp.defined();
  TORCH_CHECK(use_kl || options.kl.beta == 0.0, "grpo_loss: beta = ", options.kl.beta, " needs ref_logp");
  TORCH_CHECK(!use_kl || in.ref_logp.sizes() == in.logp.sizes(), "grpo_loss: ref_logp must be ", in.logp.sizes(),
              ", got ", in.ref_logp.sizes());

  const PolicyLossOptions& policy = options.policy;
  const at::Tensor valid = in.mask.to(at::kBool);
  const at::Tensor zero = at::zeros({}, in.logp.options());
  const at::Tensor advantage = in.advantages.to(in.logp.scalar_type()).unsqueeze(1);  // [N, 1]
  const at::Tensor positive = (advantage > 0).expand_as(valid);
  const at::Tensor negative = (advantage < 0).expand_as(valid);

  at::Tensor log_ratio = at::where(valid, in.logp - in.old_logp, zero);
  if (policy.log_ratio_clamp) log_ratio = log_ratio.clamp(-*policy.log_ratio_clamp, *policy.log_ratio_clamp);
  const at::Tensor ratio = log_ratio.exp();

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
  pg = at::where(valid, pg, zero);

  GrpoLossResult result;
  result.pg_loss_token = pg;
  result.ratio = at::where(valid, ratio, zero);
  result.pg_loss = aggregate_loss(pg, valid, options.aggregation, in.global_token_count, in.global_sequence_count);
  if (use_kl) {
    result.kl = kl_per_token(in.logp, in.ref_logp, valid, options.kl);
    result.kl_loss =
        aggregate_loss(result.kl, valid, options.aggregation, in.global_token_count, in.global_sequence_count);
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
  m.approx_kl_old = -log_ratio.detach().sum() / tokens;
  m.kl_mean = result.kl.detach().sum() / tokens;
  return result;
}

}  // namespace grpo
