#include "trainer/toy_policy.h"

#include <gtest/gtest.h>

#include <numeric>

#include "core/config.h"

namespace grpo {
namespace {

double mean_reward(const std::vector<ToyStepMetrics>& history, size_t first, size_t count) {
  double sum = 0;
  for (size_t i = first; i < first + count; ++i) sum += history[i].reward_mean;
  return sum / static_cast<double>(count);
}

Config toy_config(GrpoPreset preset) {
  Config config;
  config.model.path = "builtin:tabular";
  apply_grpo_preset(preset, config.grpo);
  config.grpo.group_size = 8;
  config.grpo.updates_per_batch = 2;
  config.trainer.steps = 60;
  config.trainer.prompts_per_step = 4;
  config.optimizer.lr = 0.05;
  return config;
}

// A uniform policy over 16 tokens matches 1/16 of target positions; GRPO with each recipe
// must learn the targets from the reward alone.
TEST(ToyPolicy, EveryPresetLearnsFromRewardAlone) {
  for (GrpoPreset preset : {GrpoPreset::kR1, GrpoPreset::kVerl, GrpoPreset::kTrl, GrpoPreset::kDapo, GrpoPreset::kDrGrpo}) {
    Config config = toy_config(preset);
    if (preset == GrpoPreset::kDrGrpo) config.grpo.aggregation.loss_scale_factor = 12;  // max length
    const auto history = train_toy_policy(config, ToyTaskOptions{});
    ASSERT_EQ(history.size(), 60u);
    const double start = mean_reward(history, 0, 5), end = mean_reward(history, 55, 5);
    EXPECT_NEAR(start, 1.0 / 16, 0.05) << "preset " << int(preset);
    EXPECT_GT(end, start + 0.4) << "preset " << int(preset);
  }
}

TEST(ToyPolicy, SameSeedSameRun) {
  Config config = toy_config(GrpoPreset::kR1);
  config.trainer.steps = 5;
  const auto a = train_toy_policy(config, ToyTaskOptions{});
  const auto b = train_toy_policy(config, ToyTaskOptions{});
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].reward_mean, b[i].reward_mean);
    EXPECT_EQ(a[i].loss, b[i].loss);
  }
}

}  // namespace
}  // namespace grpo
