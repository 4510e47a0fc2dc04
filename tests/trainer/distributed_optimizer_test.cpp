// DistributedAdamW in one process (the multi-rank cases are in tests/mpi/distributed_test.cpp):
// every ZeRO stage takes AdamW's steps, and moments saved from one stage restore into another.

#include "trainer/distributed_optimizer.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace grpo {
namespace {

// Parameters of awkward sizes (so flattening and splitting are exercised) and a gradient per step.
std::vector<at::Tensor> make_params() {
  at::manual_seed(7);
  return {at::randn({3, 5}).set_requires_grad(true), at::randn({7}).set_requires_grad(true),
          at::randn({2, 2, 3}).set_requires_grad(true)};
}

void set_grads(std::vector<at::Tensor>& params, int step) {
  for (size_t i = 0; i < params.size(); ++i)
    params[i].mutable_grad() = at::sin(at::arange(params[i].numel(), at::kFloat) * (step + 1) + static_cast<double>(i))
                                   .view_as(params[i]) * 3.0;
}

OptimizerConfig clipped() {
  OptimizerConfig options;
  options.weight_decay = 0.05;
  options.max_grad_norm = 1.0;  // the gradients above have norm ~10: clipping is active
  return options;
}

TEST(DistributedAdamW, EveryStageTakesAdamWSteps) {
  std::vector<at::Tensor> reference = make_params();
  AdamW adam(reference, clipped());
  for (int step = 0; step < 3; ++step) {
    set_grads(reference, step);
    clip_grad_norm(reference, 1.0);
    adam.step(0.01);
  }
  for (int stage : {0, 1, 2}) {
    std::vector<at::Tensor> params = make_params();
    DistributedAdamW optimizer(params, clipped(), world(), stage);
    for (int step = 0; step < 3; ++step) {
      set_grads(params, step);
      EXPECT_GT(optimizer.step(0.01), 1.0);
    }
    EXPECT_EQ(optimizer.steps_taken(), 3);
    std::vector<at::Tensor> exp_avg, exp_avg_sq;
    optimizer.gather_moments(&exp_avg, &exp_avg_sq);
    for (size_t i = 0; i < params.size(); ++i) {
      EXPECT_LE((params[i] - reference[i]).abs().max().item<double>(), 1e-6) << "stage " << stage;
      EXPECT_LE((exp_avg[i] - adam.exp_avg()[i]).abs().max().item<double>(), 1e-6) << "stage " << stage;
      EXPECT_LE((exp_avg_sq[i] - adam.exp_avg_sq()[i]).abs().max().item<double>(), 1e-6) << "stage " << stage;
    }
  }
}

TEST(DistributedAdamW, MomentsMoveBetweenStages) {
  // Stage 2 for two steps, its moments loaded into a stage 0 optimizer for the third, against
  // stage 0 throughout.
  std::vector<at::Tensor> straight = make_params(), moved = make_params();
  DistributedAdamW a(straight, clipped(), world(), 0), b(moved, clipped(), world(), 2);
  for (int step = 0; step < 2; ++step) {
    set_grads(straight, step);
    set_grads(moved, step);
    a.step(0.01);
    b.step(0.01);
  }
  std::vector<at::Tensor> exp_avg, exp_avg_sq;
  b.gather_moments(&exp_avg, &exp_avg_sq);
  DistributedAdamW c(moved, clipped(), world(), 0);
  c.load_state(b.steps_taken(), exp_avg, exp_avg_sq);
  set_grads(straight, 2);
  set_grads(moved, 2);
  a.step(0.01);
  c.step(0.01);
  for (size_t i = 0; i < straight.size(); ++i)
    EXPECT_LE((straight[i] - moved[i]).abs().max().item<double>(), 1e-6);
}

TEST(DistributedAdamW, NonFiniteGradientLeavesEverythingUntouched) {
  for (int stage : {0, 2}) {
    std::vector<at::Tensor> params = make_params();
    const std::vector<at::Tensor> before = {params[0].detach().clone(), params[1].detach().clone()};
    DistributedAdamW optimizer(params, clipped(), world(), stage);
    set_grads(params, 0);
    params[1].mutable_grad()[3] = std::numeric_limits<float>::quiet_NaN();
    EXPECT_TRUE(std::isnan(optimizer.step(0.01)));
    EXPECT_EQ(optimizer.steps_taken(), 0);
    EXPECT_TRUE(at::equal(params[0], before[0]) && at::equal(params[1], before[1])) << "stage " << stage;
  }
}

}  // namespace
}  // namespace grpo
