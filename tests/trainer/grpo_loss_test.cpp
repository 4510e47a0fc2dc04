// grpo_loss against an obvious per-row, per-token loop written here as a second opinion, over
// every combination of policy loss, KL estimator and aggregation on random batches; plus
// finite-difference gradients and the edge cases the peers disagree on.

#include "trainer/grpo_loss.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <random>
#include <vector>

namespace grpo {
namespace {

struct Batch {
  int64_t n = 0, t = 0;
  std::vector<double> logp, old_logp, ref_logp, advantages;
  std::vector<int> mask;
  double at(const std::vector<double>& m, int64_t i, int64_t j) const { return m[i * t + j]; }
};

Batch random_batch(std::mt19937& rng, int64_t n, int64_t t) {
  std::normal_distribution<double> noise(0.0, 0.4);
  std::uniform_real_distribution<double> logp(-4.0, -0.05);
  Batch b;
  b.n = n;
  b.t = t;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t length = i == 1 ? 0 : std::uniform_int_distribution<int64_t>(1, t)(rng);  // row 1 is empty
    b.advantages.push_back(i == 2 ? 0.0 : noise(rng) * 3);
    for (int64_t j = 0; j < t; ++j) {
      const double lp = logp(rng);
      b.logp.push_back(lp);
      b.old_logp.push_back(lp + noise(rng));
      b.ref_logp.push_back(lp + noise(rng));
      b.mask.push_back(j < length ? 1 : 0);
    }
  }
  return b;
}

struct Naive {
  double pg_loss = 0, kl_loss = 0, loss = 0;
};

double naive_kl(double logp, double ref, const KlOptions& o) {
  const double u = logp - ref;
  switch (o.estimator) {
    case KlEstimator::kK1: return u;
    case KlEstimator::kAbs: return std::abs(u);
    case KlEstimator::kK2: return 0.5 * u * u;
    case KlEstimator::kK3: {
      double x = -u;
      if (o.log_ratio_clamp) x = std::clamp(x, -*o.log_ratio_clamp, *o.log_ratio_clamp);
      double k = std::exp(x) - x - 1;
      if (o.value_clamp) k = std::clamp(k, -*o.value_clamp, *o.value_clamp);
      return k;
    }
  }
  return 0;
}

double naive_pg(double logp, double old, double a, const PolicyLossOptions& o) {
  double d = logp - old;
  if (o.log_ratio_clamp) d = std::clamp(d, -*o.log_ratio_clamp, *o.log_ratio_clamp);
  const double rho = std::exp(d);
  switch (o.kind) {
    case PolicyLossKind::kClip: {
      const double capped = o.ratio_cap ? std::min(rho, *o.ratio_cap) : rho;
      double pg = std::max(-a * capped, -a * std::clamp(rho, 1 - o.eps_low, 1 + o.eps_high));
      if (o.dual_clip_c && a < 0) pg = std::min(pg, -a * *o.dual_clip_c);
      return pg;
    }
    case PolicyLossKind::kCispo: return -std::min(rho, o.eps_high) * a * logp;
    case PolicyLossKind::kSapo: {
      const double tau = a > 0 ? o.sapo_tau_pos : o.sapo_tau_neg;
      return -(1.0 / (1.0 + std::exp(-tau * (rho - 1))) * 4 / tau) * a;
    }
  }
  return 0;
}

// Aggregates a per-token value function over the valid tokens of the batch, mode by mode.
template <class PerToken>
double naive_aggregate(const Batch& b, const AggregationOptions& o, PerToken value) {
  double total = 0, tokens = 0, seq_sum = 0, seq_mean = 0, sequences = 0;
  for (int64_t i = 0; i < b.n; ++i) {
    double row = 0, length = 0;
    for (int64_t j = 0; j < b.t; ++j) {
      if (!b.mask[i * b.t + j]) continue;
      row += value(i, j);
      length += 1;
    }
    total += row;
    tokens += length;
    if (length > 0 || o.count_empty_sequences) sequences += 1;
    seq_sum += row;
    seq_mean += length > 0 ? row / (length + o.seq_mean_epsilon) : 0.0;
  }
  sequences = std::max(sequences, 1.0);
  switch (o.mode) {
    case LossAggregation::kTokenMean: return total / std::max(tokens, 1.0);
    case LossAggregation::kSeqMeanTokenSum: return seq_sum / sequences;
    case LossAggregation::kSeqMeanTokenMean: return seq_mean / sequences;
    case LossAggregation::kSeqMeanTokenSumNorm: {
      const double norm = total / o.loss_scale_factor.value_or(static_cast<double>(b.t));
      return o.norm_per_sequence ? norm / sequences : norm;
    }
  }
  return 0;
}

Naive naive_loss(const Batch& b, const GrpoLossOptions& o) {
  Naive r;
  r.pg_loss = naive_aggregate(b, o.aggregation, [&](int64_t i, int64_t j) {
    return naive_pg(b.at(b.logp, i, j), b.at(b.old_logp, i, j), b.advantages[i], o.policy);
  });
  r.kl_loss = naive_aggregate(
      b, o.aggregation, [&](int64_t i, int64_t j) { return naive_kl(b.at(b.logp, i, j), b.at(b.ref_logp, i, j), o.kl); });
  r.loss = r.pg_loss + o.kl.beta * r.kl_loss;
  return r;
}

GrpoLossInputs to_inputs(const Batch& b) {
  GrpoLossInputs in;
  in.logp = at::tensor(b.logp, at::kDouble).view({b.n, b.t}).clone().set_requires_grad(true);
  in.old_logp = at::tensor(b.old_logp, at::kDouble).view({b.n, b.t}).clone();
  in.ref_logp = at::tensor(b.ref_logp, at::kDouble).view({b.n, b.t}).clone();
  in.advantages = at::tensor(b.advantages, at::kDouble);
  in.mask = at::tensor(std::vector<int64_t>(b.mask.begin(), b.mask.end()), at::kLong).view({b.n, b.t});
  return in;
}

std::vector<GrpoLossOptions> option_grid() {
  std::vector<GrpoLossOptions> grid;
  for (auto kind : {PolicyLossKind::kClip, PolicyLossKind::kCispo, PolicyLossKind::kSapo})
    for (auto estimator : {KlEstimator::kK1, KlEstimator::kAbs, KlEstimator::kK2, KlEstimator::kK3})
      for (auto mode : {LossAggregation::kTokenMean, LossAggregation::kSeqMeanTokenSum,
                        LossAggregation::kSeqMeanTokenMean, LossAggregation::kSeqMeanTokenSumNorm})
        for (int variant = 0; variant < 2; ++variant) {
          GrpoLossOptions o;
          o.policy.kind = kind;
          o.policy.eps_high = kind == PolicyLossKind::kCispo ? 1.5 : 0.28;
          o.kl.estimator = estimator;
          o.kl.beta = 0.05;
          o.aggregation.mode = mode;
          if (variant == 1) {  // the verl-style switches on, TRL-style counting on
            o.policy.log_ratio_clamp = 0.3;
            o.policy.dual_clip_c = 1.5;
            o.policy.ratio_cap = 1.4;
            o.kl.log_ratio_clamp = 0.5;
            o.kl.value_clamp = 0.05;
            o.aggregation.count_empty_sequences = true;
            o.aggregation.seq_mean_epsilon = 0.0;
            o.aggregation.loss_scale_factor = 9.0;
            o.aggregation.norm_per_sequence = true;
          }
          grid.push_back(o);
        }
  return grid;
}

TEST(GrpoLoss, MatchesPerTokenLoopForEveryOptionCombination) {
  std::mt19937 rng(7);
  const auto grid = option_grid();
  for (size_t k = 0; k < grid.size(); ++k) {
    const Batch b = random_batch(rng, 6, 5);
    const GrpoLossResult got = grpo_loss(to_inputs(b), grid[k]);
    const Naive want = naive_loss(b, grid[k]);
    EXPECT_NEAR(got.pg_loss.item<double>(), want.pg_loss, 1e-12 * (1 + std::abs(want.pg_loss))) << "combination " << k;
    EXPECT_NEAR(got.kl_loss.item<double>(), want.kl_loss, 1e-12 * (1 + std::abs(want.kl_loss))) << "combination " << k;
    EXPECT_NEAR(got.loss.item<double>(), want.loss, 1e-12 * (1 + std::abs(want.loss))) << "combination " << k;
  }
}

TEST(GrpoLoss, GradientMatchesFiniteDifferences) {
  std::mt19937 rng(11);
  const auto grid = option_grid();
  for (size_t k = 0; k < grid.size(); k += 5) {
    const Batch b = random_batch(rng, 4, 3);
    GrpoLossInputs in = to_inputs(b);
    grpo_loss(in, grid[k]).loss.backward();
    const at::Tensor grad = in.logp.grad();
    for (int64_t i = 0; i < b.n; ++i)
      for (int64_t j = 0; j < b.t; ++j) {
        const double h = 1e-6;
        Batch plus = b, minus = b;
        plus.logp[i * b.t + j] += h;
        minus.logp[i * b.t + j] -= h;
        const double numeric = (naive_loss(plus, grid[k]).loss - naive_loss(minus, grid[k]).loss) / (2 * h);
        // CISPO's detached weight is not differentiated: its analytic gradient is -w A.
        if (grid[k].policy.kind == PolicyLossKind::kCispo) continue;
        EXPECT_NEAR(grad[i][j].item<double>(), numeric, 1e-6) << "combination " << k << " token " << i << "," << j;
      }
  }
}

TEST(GrpoLoss, PaddingValuesNeverMatter) {
  std::mt19937 rng(3);
  const Batch b = random_batch(rng, 4, 6);
  GrpoLossInputs clean = to_inputs(b);
  GrpoLossInputs dirty = to_inputs(b);
  const at::Tensor padding = dirty.mask == 0;
  {
    at::NoGradGuard no_grad;
    dirty.logp.masked_fill_(padding, 800.0);  // exp would overflow if padding were used
    dirty.old_logp.masked_fill_(padding, -800.0);
    dirty.ref_logp.masked_fill_(padding, std::nan(""));
  }
  GrpoLossOptions options;
  options.policy.kind = PolicyLossKind::kCispo;
  const GrpoLossResult a = grpo_loss(clean, options), c = grpo_loss(dirty, options);
  a.loss.backward();
  c.loss.backward();
  EXPECT_EQ(a.loss.item<double>(), c.loss.item<double>());
  EXPECT_TRUE(at::equal(clean.logp.grad(), dirty.logp.grad()));
  EXPECT_EQ(dirty.logp.grad().masked_select(padding).abs().sum().item<double>(), 0.0);
  EXPECT_TRUE(at::equal(a.ratio, c.ratio));
}

TEST(GrpoLoss, EmptyBatchGivesZeroNotNan) {
  GrpoLossInputs in;
  in.logp = at::zeros({2, 3}, at::kDouble).set_requires_grad(true);
  in.old_logp = at::zeros({2, 3}, at::kDouble);
  in.ref_logp = at::zeros({2, 3}, at::kDouble);
  in.advantages = at::ones({2}, at::kDouble);
  in.mask = at::zeros({2, 3}, at::kLong);
  for (auto mode : {LossAggregation::kTokenMean, LossAggregation::kSeqMeanTokenSum, LossAggregation::kSeqMeanTokenMean,
                    LossAggregation::kSeqMeanTokenSumNorm}) {
    GrpoLossOptions options;
    options.aggregation.mode = mode;
    const GrpoLossResult r = grpo_loss(in, options);
    EXPECT_EQ(r.loss.item<double>(), 0.0);
    EXPECT_EQ(r.metrics.clip_frac.item<double>(), 0.0);
  }
}

TEST(GrpoLoss, ClipMetricsCountTheActiveBranch) {
  GrpoLossInputs in;
  // Ratios e^0.5 (A>0: clipped high), e^-0.5 (A<0: clipped low), 1 (never), e^2 with A<0 (dual clip at 3).
  in.logp = at::tensor({0.5, -0.5, 0.0, 2.0}, at::kDouble).view({4, 1}).set_requires_grad(true);
  in.old_logp = at::zeros({4, 1}, at::kDouble);
  in.advantages = at::tensor({1.0, -1.0, 1.0, -1.0}, at::kDouble);
  in.mask = at::ones({4, 1}, at::kLong);
  GrpoLossOptions options;
  options.kl.beta = 0;
  options.policy.dual_clip_c = 3.0;
  const GrpoLossResult r = grpo_loss(in, options);
  EXPECT_DOUBLE_EQ(r.metrics.clip_frac_high.item<double>(), 0.25);
  EXPECT_DOUBLE_EQ(r.metrics.clip_frac_low.item<double>(), 0.25);  // e^2 with A<0 is not clipped by eps
  EXPECT_DOUBLE_EQ(r.metrics.clip_frac.item<double>(), 0.5);
  EXPECT_DOUBLE_EQ(r.metrics.dual_clip_frac.item<double>(), 0.25);
  EXPECT_DOUBLE_EQ(r.pg_loss_token[3][0].item<double>(), 3.0);
}

// Advantages against a loop over groups.
TEST(GroupAdvantages, MatchLoopOverGroups) {
  std::mt19937 rng(5);
  std::uniform_int_distribution<int> binary(0, 1);
  for (auto scaling : {AdvantageScaling::kGroupStd, AdvantageScaling::kBatchStd, AdvantageScaling::kNone})
    for (bool unbiased : {true, false}) {
      const int64_t groups = 5, g = 4;
      std::vector<double> rewards;
      for (int64_t i = 0; i < groups * g; ++i) rewards.push_back(i < g ? 1.0 : binary(rng) * 0.5 + binary(rng));
      AdvantageOptions options;
      options.scaling = scaling;
      options.std_unbiased = unbiased;
      const at::Tensor got = group_advantages(at::tensor(rewards, at::kDouble), g, options);

      auto stddev = [&](size_t first, size_t count) {
        double mean = 0, ss = 0;
        for (size_t i = first; i < first + count; ++i) mean += rewards[i] / count;
        for (size_t i = first; i < first + count; ++i) ss += (rewards[i] - mean) * (rewards[i] - mean);
        return std::sqrt(ss / (unbiased ? count - 1 : count));
      };
      const double batch_std = stddev(0, rewards.size());
      for (int64_t k = 0; k < groups; ++k) {
        double mean = 0;
        for (int64_t i = 0; i < g; ++i) mean += rewards[k * g + i] / g;
        for (int64_t i = 0; i < g; ++i) {
          const double centred = rewards[k * g + i] - mean;
          double want = centred;
          if (scaling == AdvantageScaling::kGroupStd) want = centred / (stddev(k * g, g) + options.std_epsilon);
          if (scaling == AdvantageScaling::kBatchStd) want = centred / (batch_std + options.std_epsilon);
          EXPECT_NEAR(got[k * g + i].item<double>(), want, 1e-12);
        }
      }
      // The first group has equal rewards: no signal, exactly zero.
      EXPECT_EQ(got.slice(0, 0, g).abs().sum().item<double>(), 0.0);
    }
}

TEST(GroupAdvantages, SingletonGroupsFollowTheChosenPeer) {
  const at::Tensor rewards = at::tensor({1.0, 0.0, 0.5}, at::kDouble);
  AdvantageOptions options;
  options.singleton_group = SingletonGroup::kZeroAdvantage;
  EXPECT_EQ(group_advantages(rewards, 1, options).abs().sum().item<double>(), 0.0);
  options.singleton_group = SingletonGroup::kRawReward;
  EXPECT_NEAR(group_advantages(rewards, 1, options)[2].item<double>(), 0.5 / (1 + 1e-6), 1e-15);
}

TEST(GroupAdvantages, RejectsRaggedGroups) {
  EXPECT_THROW(group_advantages(at::zeros({5}, at::kDouble), 2, AdvantageOptions{}), c10::Error);
}

// GSPO's sequence ratio: grpo-cpp differentiates through the row's mean log-ratio; verl writes the
// per-token log-ratio as logp - sg(logp) + sg(mean), capped. The two give the same loss and
// gradient under every aggregation mode, with clipping active on some rows and the cap on one.
TEST(GrpoLoss, SequenceRatioEqualsTheStopGradientTokenForm) {
  std::mt19937 rng(3);
  const Batch b = random_batch(rng, 6, 7);
  std::vector<double> old_logp = b.old_logp;
  for (int64_t j = 0; j < b.t; ++j) old_logp[0 * b.t + j] = b.logp[0 * b.t + j] - 12.0;  // row 0: mean log-ratio 12 > cap
  const at::Tensor logp0 = at::tensor(b.logp, at::kDouble).view({b.n, b.t});
  const at::Tensor old = at::tensor(old_logp, at::kDouble).view({b.n, b.t});
  const at::Tensor mask = at::tensor(b.mask, at::kInt).view({b.n, b.t});
  const at::Tensor advantages = at::tensor(b.advantages, at::kDouble);
  for (const LossAggregation mode : {LossAggregation::kTokenMean, LossAggregation::kSeqMeanTokenSum,
                                     LossAggregation::kSeqMeanTokenMean, LossAggregation::kSeqMeanTokenSumNorm}) {
    GrpoLossOptions o;
    o.policy.importance_level = ImportanceLevel::kSequence;
    o.policy.sequence_log_ratio_cap = 10.0;
    o.policy.eps_low = o.policy.eps_high = 0.1;
    o.kl.beta = 0.0;
    o.aggregation.mode = mode;
    GrpoLossInputs in;
    in.logp = logp0.clone().set_requires_grad(true);
    in.old_logp = old;
    in.mask = mask;
    in.advantages = advantages;
    const GrpoLossResult got = grpo_loss(in, o);
    got.loss.backward();

    // verl's form, written out here.
    const at::Tensor logp = logp0.clone().set_requires_grad(true);
    const at::Tensor valid = mask.to(at::kBool);
    const at::Tensor d = at::where(valid, logp - old, at::zeros({}, at::kDouble));
    const at::Tensor mean = (d.sum(1, true) / valid.sum(1, true).to(at::kDouble).clamp_min(1.0)).detach();
    const at::Tensor s = (logp - logp.detach() + mean).clamp_max(10.0).exp();
    const at::Tensor a = advantages.unsqueeze(1);
    const at::Tensor pg = at::maximum(-a * s, -a * s.clamp(0.9, 1.1));
    AggregationOptions agg;
    agg.mode = mode;
    const at::Tensor want = aggregate_loss(at::where(valid, pg, at::zeros({}, at::kDouble)), valid, agg);
    want.backward();
    EXPECT_NEAR(got.loss.item<double>(), want.item<double>(), 1e-12) << int(mode);
    EXPECT_LE((in.logp.grad() - logp.grad()).abs().max().item<double>(), 1e-12) << int(mode);
    EXPECT_EQ(in.logp.grad()[0].abs().sum().item<double>(), 0.0) << "the capped row gets no gradient";
    EXPECT_GT(got.metrics.row_clip_frac.item<double>(), 0.0);
  }
}

// rollout_correction against a per-row loop, for the options the peer fixtures may not combine:
// sequence-level weights with batch normalization, masked bounds, and every rejection statistic.
TEST(RolloutCorrection, MatchesAPerRowLoop) {
  std::mt19937 rng(7);
  const Batch b = random_batch(rng, 6, 5);
  std::vector<double> sampling;
  std::normal_distribution<double> noise(0.0, 0.6);
  for (double lp : b.old_logp) sampling.push_back(lp + noise(rng));
  const at::Tensor old_logp = at::tensor(b.old_logp, at::kDouble).view({b.n, b.t});
  const at::Tensor sampling_logp = at::tensor(sampling, at::kDouble).view({b.n, b.t});
  const at::Tensor mask = at::tensor(b.mask, at::kInt).view({b.n, b.t});
  const auto q = [&](int64_t i, int64_t j) { return b.mask[i * b.t + j] ? b.at(b.old_logp, i, j) - sampling[i * b.t + j] : 0.0; };
  const auto n_i = [&](int64_t i) {
    double n = 0;
    for (int64_t j = 0; j < b.t; ++j) n += b.mask[i * b.t + j];
    return n;
  };

  for (const bool sequence : {false, true})
    for (const WeightBounds bounds : {WeightBounds::kTruncate, WeightBounds::kMask}) {
      RolloutCorrectionOptions o;
      o.level = sequence ? CorrectionLevel::kSequence : CorrectionLevel::kToken;
      o.bounds = bounds;
      o.weight_min = 0.6;
      o.weight_max = 1.5;
      o.batch_normalize = true;
      const RolloutCorrection got = rollout_correction(old_logp, sampling_logp, mask, o);
      std::vector<double> w(static_cast<size_t>(b.n * b.t), 0.0);
      for (int64_t i = 0; i < b.n; ++i) {
        double row_sum = 0;
        for (int64_t j = 0; j < b.t; ++j) row_sum += q(i, j);
        for (int64_t j = 0; j < b.t; ++j) {
          double x = std::exp(sequence ? row_sum : q(i, j));
          if (bounds == WeightBounds::kTruncate) x = std::clamp(x, 0.6, 1.5);
          else if (x < 0.6 || x > 1.5) x = 0;
          w[i * b.t + j] = b.mask[i * b.t + j] ? x : 0.0;
        }
      }
      double mean = 0, rows = 0, tokens = 0;
      for (int64_t i = 0; i < b.n; ++i) {
        double row = 0;
        for (int64_t j = 0; j < b.t; ++j) row += w[i * b.t + j];
        tokens += n_i(i);
        if (sequence && n_i(i) > 0) {
          mean += row / (n_i(i) + 1e-8);
          rows += 1;
        } else if (!sequence) {
          mean += row;
        }
      }
      mean = sequence ? mean / rows : mean / (tokens + 1e-8);
      EXPECT_NEAR(got.metrics.batch_norm_factor.item<double>(), mean, 1e-12);
      for (int64_t k = 0; k < b.n * b.t; ++k)
        EXPECT_NEAR(got.weights.view({-1})[k].item<double>(), w[k] / mean, 1e-12) << sequence << " " << int(bounds);
    }

  // Rejection: each statistic by hand, with bounds that split the batch.
  struct Case {
    RejectionStatistic statistic;
    std::optional<double> lower, upper;
  };
  for (const Case& c : std::vector<Case>{{RejectionStatistic::kTokenK1, 0.7, 1.6},
                                         {RejectionStatistic::kTokenK3, std::nullopt, 0.1},
                                         {RejectionStatistic::kSeqSumK1, 0.5, 2.0},
                                         {RejectionStatistic::kSeqMeanK2, std::nullopt, 0.08},
                                         {RejectionStatistic::kSeqMaxK2, std::nullopt, 0.2},
                                         {RejectionStatistic::kSeqMaxK3, 0.01, 0.3}}) {
    RolloutCorrectionOptions o;
    o.rejection = {RejectionRule{c.statistic, c.lower, c.upper}};
    const RolloutCorrection got = rollout_correction(old_logp, sampling_logp, mask, o);
    EXPECT_FALSE(got.weights.defined());
    double rejected = 0, tokens = 0;
    for (int64_t i = 0; i < b.n; ++i) {
      std::vector<double> k(static_cast<size_t>(b.t));
      for (int64_t j = 0; j < b.t; ++j) {
        const double x = q(i, j);
        const int kind = static_cast<int>(c.statistic);  // k1, k2, k3 repeat in the enum, then seq_max k2, k3
        const int kernel = kind >= static_cast<int>(RejectionStatistic::kSeqMaxK2) ? kind - 8 : kind % 3;
        k[j] = kernel == 0 ? -x : kernel == 1 ? 0.5 * x * x : std::exp(x) - 1 - x;
      }
      double sum = 0, max = 0;
      for (int64_t j = 0; j < b.t; ++j)
        if (b.mask[i * b.t + j]) {
          sum += k[j];
          max = std::max(max, k[j]);
        }
      const bool k1 = c.statistic == RejectionStatistic::kTokenK1 || c.statistic == RejectionStatistic::kSeqSumK1;
      const auto keeps = [&](double stat) {
        const double lo = c.lower ? (k1 ? std::log(*c.lower) : *c.lower) : -1e300;
        const double hi = c.upper ? (k1 ? std::log(*c.upper) : *c.upper) : 1e300;
        return stat >= lo && stat <= hi;
      };
      for (int64_t j = 0; j < b.t; ++j) {
        if (!b.mask[i * b.t + j]) continue;
        double stat = k[j];
        if (c.statistic == RejectionStatistic::kSeqSumK1) stat = sum;
        if (c.statistic == RejectionStatistic::kSeqMeanK2) stat = sum / (n_i(i) + 1e-8);
        if (c.statistic == RejectionStatistic::kSeqMaxK2 || c.statistic == RejectionStatistic::kSeqMaxK3) stat = max;
        const bool keep = keeps(stat);
        EXPECT_EQ(got.mask[i][j].item<bool>(), keep) << "statistic " << int(c.statistic) << " row " << i << " token " << j;
        rejected += keep ? 0 : 1;
        tokens += 1;
      }
    }
    EXPECT_GT(rejected, 0) << "statistic " << int(c.statistic) << ": bounds reject nothing";
    EXPECT_LT(rejected, tokens) << "statistic " << int(c.statistic) << ": bounds reject everything";
    EXPECT_NEAR(got.metrics.rejected_frac.item<double>(), rejected / tokens, 1e-15);
    EXPECT_EQ(got.mask.logical_and(mask.logical_not()).sum().item<int64_t>(), 0);  // padding never returns
  }
}

}  // namespace
}  // namespace grpo
