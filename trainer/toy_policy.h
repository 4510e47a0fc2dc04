#pragma once
// The smallest end-to-end GRPO run: a tabular policy (one categorical distribution per prompt
// and position) learns hidden target strings from a reward alone. It wires sampling, group
// advantages, grpo_loss, gradient clipping, AdamW and the schedule exactly as the real trainer
// will, in milliseconds per step, so the whole objective can be checked to learn on any machine.

#include <cstdint>
#include <functional>
#include <vector>

#include "core/config.h"

namespace grpo {

struct ToyTaskOptions {
  int64_t num_prompts = 8;   // distinct prompts, each with its own hidden target
  int64_t vocab_size = 16;
  int64_t max_length = 12;   // targets have lengths in [max_length / 2, max_length]
};

struct ToyStepMetrics {
  int64_t step = 0;
  double reward_mean = 0;    // share of target positions matched, averaged over samples
  double exact_match = 0;    // share of samples equal to their target
  double loss = 0;
  double clip_frac = 0;
  double kl_mean = 0;
  double grad_norm = 0;
  double lr = 0;
};

// Trains for config.trainer.steps steps, sampling config.trainer.prompts_per_step prompts per
// step, each config.grpo.group_size times at config.rollout.temperature. Calls `on_step` after
// every step and returns every step's metrics.
std::vector<ToyStepMetrics> train_toy_policy(const Config& config, const ToyTaskOptions& task,
                                             const std::function<void(const ToyStepMetrics&)>& on_step = {});

}  // namespace grpo
