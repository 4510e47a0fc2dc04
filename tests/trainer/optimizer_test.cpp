#include "trainer/optimizer.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>

namespace grpo {
namespace {

// Two AdamW steps on one scalar, written out by hand from the AdamW paper's update with
// PyTorch's bias correction, as a second opinion on the vectorized implementation.
TEST(AdamW, MatchesHandComputedSteps) {
  OptimizerConfig options;
  options.beta1 = 0.9;
  options.beta2 = 0.99;
  options.eps = 1e-8;
  options.weight_decay = 0.1;
  at::Tensor p = at::full({1}, 2.0, at::kDouble).set_requires_grad(true);
  AdamW adam({p}, options);

  double value = 2.0, m = 0, v = 0;
  const double lr = 0.01;
  for (int t = 1; t <= 2; ++t) {
    const double grad = 3.0 * t;
    p.mutable_grad() = at::full({1}, grad, at::kDouble);
    adam.step(lr);
    value *= 1 - lr * options.weight_decay;
    m = 0.9 * m + 0.1 * grad;
    v = 0.99 * v + 0.01 * grad * grad;
    const double m_hat = m / (1 - std::pow(0.9, t)), v_hat = v / (1 - std::pow(0.99, t));
    value -= lr * m_hat / (std::sqrt(v_hat) + options.eps);
    EXPECT_NEAR(p.item<double>(), value, 1e-12) << "step " << t;
  }
  EXPECT_EQ(adam.steps_taken(), 2);
}

TEST(Schedule, WarmupThenCosineToMinimum) {
  OptimizerConfig options;
  options.lr = 1.0;
  options.warmup_steps = 4;
  options.schedule = LrSchedule::kCosine;
  options.min_lr_ratio = 0.1;
  EXPECT_DOUBLE_EQ(scheduled_lr(options, 0, 14), 0.25);
  EXPECT_DOUBLE_EQ(scheduled_lr(options, 3, 14), 1.0);
  EXPECT_DOUBLE_EQ(scheduled_lr(options, 4, 14), 1.0);
  EXPECT_NEAR(scheduled_lr(options, 9, 14), 0.1 + 0.9 * 0.5, 1e-12);  // half way: cos(pi/2) = 0
  EXPECT_NEAR(scheduled_lr(options, 14, 14), 0.1, 1e-12);
  options.schedule = LrSchedule::kConstant;
  EXPECT_DOUBLE_EQ(scheduled_lr(options, 10, 14), 1.0);
}

TEST(ClipGradNorm, ScalesToMaxNormAndReturnsTheNormBefore) {
  at::Tensor a = at::zeros({2}, at::kDouble).set_requires_grad(true);
  at::Tensor b = at::zeros({1}, at::kDouble).set_requires_grad(true);
  a.mutable_grad() = at::tensor({3.0, 0.0}, at::kDouble);
  b.mutable_grad() = at::tensor({4.0}, at::kDouble);
  EXPECT_NEAR(clip_grad_norm({a, b}, 1.0).item<double>(), 5.0, 1e-12);
  const double scale = 1.0 / (5.0 + 1e-6);
  EXPECT_NEAR(a.grad()[0].item<double>(), 3.0 * scale, 1e-12);
  EXPECT_NEAR(b.grad()[0].item<double>(), 4.0 * scale, 1e-12);
  // Below the bound nothing changes.
  EXPECT_NEAR(clip_grad_norm({a, b}, 10.0).item<double>(), 5.0 * scale, 1e-12);
  EXPECT_NEAR(b.grad()[0].item<double>(), 4.0 * scale, 1e-12);
}

}  // namespace
}  // namespace grpo
