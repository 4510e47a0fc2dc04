// On-policy distillation's math (trainer/grpo_loss): the per-token reverse-KL advantages and the
// clipped policy loss over them, against hand computations on a 2 x 3 batch; and per-token
// advantages that are constant along each row train exactly like per-sequence ones.

#include "trainer/grpo_loss.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>

namespace grpo {
namespace {

// Row 0 has three response tokens, row 1 two and one pad, whose log-probs are garbage on purpose.
const at::Tensor kStudent = at::tensor({-1.0, -0.5, -2.0, -0.2, -3.0, 123.0}, at::kDouble).view({2, 3});
const at::Tensor kTeacher = at::tensor({-1.5, -0.5, -1.0, -0.7, -1.0, -9.0}, at::kDouble).view({2, 3});
const at::Tensor kMask = at::tensor({1, 1, 1, 1, 1, 0}, at::kInt).view({2, 3});

void expect_near(const at::Tensor& actual, const std::vector<double>& expected, double tolerance = 1e-12) {
  ASSERT_EQ(actual.numel(), static_cast<int64_t>(expected.size()));
  const at::Tensor flat = actual.to(at::kDouble).contiguous().view({-1});
  for (int64_t i = 0; i < flat.numel(); ++i)
    EXPECT_NEAR(flat[i].item<double>(), expected[static_cast<size_t>(i)], tolerance) << "element " << i;
}

// The clipped loss, averaged over every valid token, without a KL term.
GrpoLossOptions token_mean_without_kl() {
  GrpoLossOptions options;
  options.policy.kind = PolicyLossKind::kClip;
  options.aggregation.mode = LossAggregation::kTokenMean;
  options.kl.beta = 0.0;
  return options;
}

TEST(DistillationLoss, ReverseKlIsStudentMinusTeacherAtValidTokens) {
  // s - t = [0.5, 0, -1 | 0.5, -2, pad]
  expect_near(reverse_kl_per_token(kStudent, kTeacher, kMask), {0.5, 0.0, -1.0, 0.5, -2.0, 0.0});
}

TEST(DistillationLoss, PureDistillationAdvantagesByHand) {
  DistillationOptions options;
  options.coefficient = 2.0;
  options.reward_weight = 0.0;
  // A_t = -2 (s - t); the group advantages are not needed and not read.
  expect_near(distillation_advantages(kStudent, kTeacher, kMask, at::Tensor(), options), {-1.0, 0.0, 2.0, -1.0, 4.0, 0.0});
}

TEST(DistillationLoss, RewardAdvantageIsAddedAtValidTokens) {
  DistillationOptions options;
  options.coefficient = 2.0;
  options.reward_weight = 0.5;
  const at::Tensor group = at::tensor({1.0, -1.0}, at::kDouble);
  // -2 (s - t) + 0.5 * [1 | -1], nothing at the pad.
  expect_near(distillation_advantages(kStudent, kTeacher, kMask, group, options), {-0.5, 0.5, 2.5, -1.5, 3.5, 0.0});
  EXPECT_THROW(distillation_advantages(kStudent, kTeacher, kMask, at::Tensor(), options), c10::Error);
}

TEST(DistillationLoss, OnPolicyLossAndGradientByHand) {
  DistillationOptions options;
  options.coefficient = 2.0;
  options.reward_weight = 0.5;
  const at::Tensor advantages =
      distillation_advantages(kStudent, kTeacher, kMask, at::tensor({1.0, -1.0}, at::kDouble), options);
  GrpoLossInputs in;
  in.logp = kStudent.clone().requires_grad_(true);
  in.old_logp = kStudent;  // on-policy: ratio 1, no clipping
  in.advantages = advantages;
  in.mask = kMask;
  GrpoLossOptions loss_options = token_mean_without_kl();
  const GrpoLossResult result = grpo_loss(in, loss_options);
  // token-mean of -A over 5 tokens: -(-0.5 + 0.5 + 2.5 - 1.5 + 3.5) / 5
  EXPECT_NEAR(result.loss.item<double>(), -0.9, 1e-12);
  result.loss.backward();
  // d/dlogp of -A * exp(logp - old) at ratio 1 is -A, over the 5 tokens.
  expect_near(in.logp.grad(), {0.1, -0.1, -0.5, 0.3, -0.7, 0.0});
}

TEST(DistillationLoss, ClippingFollowsEachTokensOwnSign) {
  DistillationOptions options;
  options.coefficient = 2.0;
  const at::Tensor advantages = distillation_advantages(kStudent, kTeacher, kMask, at::Tensor(), options);
  // A = [-1, 0, 2 | -1, 4, pad]; log-ratios [0.3, 0.3, 0.3 | -0.3, 0, pad].
  GrpoLossInputs in;
  in.old_logp = kStudent;
  in.logp = kStudent + at::tensor({0.3, 0.3, 0.3, -0.3, 0.0, 0.0}, at::kDouble).view({2, 3});
  in.advantages = advantages;
  in.mask = kMask;
  GrpoLossOptions loss_options = token_mean_without_kl();
  loss_options.policy.eps_low = loss_options.policy.eps_high = 0.2;
  const GrpoLossResult result = grpo_loss(in, loss_options);
  const double up = std::exp(0.3), down = std::exp(-0.3);
  // Token by token: max(-A r, -A clip(r, 0.8, 1.2)).
  //   A = -1, r = e^0.3:  max(e^0.3, 1.2)   = e^0.3  (unclipped)
  //   A =  0:             0
  //   A =  2, r = e^0.3:  max(-2e^0.3, -2.4) = -2.4  (clipped high)
  //   A = -1, r = e^-0.3: max(e^-0.3, 0.8)  = 0.8   (clipped low)
  //   A =  4, r = 1:      -4
  expect_near(result.pg_loss_token, {up, 0.0, -2.4, 0.8, -4.0, 0.0});
  EXPECT_NEAR(result.loss.item<double>(), (up - 2.4 + 0.8 - 4.0) / 5.0, 1e-12);
  EXPECT_NEAR(result.metrics.clip_frac_high.item<double>(), 0.2, 1e-12);
  EXPECT_NEAR(result.metrics.clip_frac_low.item<double>(), 0.2, 1e-12);
  EXPECT_LT(down, 0.8);  // the premise of the third row's case
}

TEST(DistillationLoss, RowConstantTokenAdvantagesEqualSequenceAdvantages) {
  at::manual_seed(7);
  const int64_t n = 6, t = 5;
  const at::Tensor logp = at::randn({n, t}, at::kDouble) * 0.5 - 1.0;
  const at::Tensor old_logp = logp + at::randn({n, t}, at::kDouble) * 0.3;
  const at::Tensor ref_logp = logp + at::randn({n, t}, at::kDouble) * 0.3;
  const at::Tensor mask = at::rand({n, t}) > 0.3;
  const at::Tensor sequence = at::randn({n}, at::kDouble);
  for (PolicyLossKind kind : {PolicyLossKind::kClip, PolicyLossKind::kCispo, PolicyLossKind::kSapo}) {
    for (LossAggregation mode : {LossAggregation::kTokenMean, LossAggregation::kSeqMeanTokenMean}) {
      GrpoLossOptions options;
      options.policy.kind = kind;
      options.policy.dual_clip_c = kind == PolicyLossKind::kClip ? std::optional<double>(3.0) : std::nullopt;
      if (kind == PolicyLossKind::kCispo) options.policy.eps_high = 2.0;
      options.aggregation.mode = mode;
      options.kl.beta = 0.1;
      GrpoLossInputs in;
      in.logp = logp;
      in.old_logp = old_logp;
      in.ref_logp = ref_logp;
      in.mask = mask;
      in.advantages = sequence;
      const GrpoLossResult by_sequence = grpo_loss(in, options);
      in.advantages = sequence.unsqueeze(1).expand({n, t}).contiguous();
      const GrpoLossResult by_token = grpo_loss(in, options);
      EXPECT_NEAR(by_sequence.loss.item<double>(), by_token.loss.item<double>(), 1e-12) << int(kind) << " " << int(mode);
      EXPECT_TRUE(at::allclose(by_sequence.pg_loss_token, by_token.pg_loss_token, 0, 1e-12));
      EXPECT_NEAR(by_sequence.metrics.clip_frac.item<double>(), by_token.metrics.clip_frac.item<double>(), 1e-12);
    }
  }
}

TEST(DistillationLoss, AdvantagesOfAnotherShapeAreRefused) {
  GrpoLossInputs in;
  in.logp = kStudent;
  in.old_logp = kStudent;
  in.mask = kMask;
  in.advantages = at::zeros({2, 2}, at::kDouble);
  EXPECT_THROW(grpo_loss(in, token_mean_without_kl()), c10::Error);
}

}  // namespace
}  // namespace grpo
