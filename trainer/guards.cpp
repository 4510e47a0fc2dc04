#include "trainer/guards.h"

#include <fmt/format.h>

#include "core/logging.h"

namespace grpo {

Status TrainingGuards::observe(int64_t step, const StepHealth& health) {
  window_.push_back(health);
  while (static_cast<int64_t>(window_.size()) > config_.window_steps) window_.pop_front();

  const bool all_flat = health.zero_std_group_fraction >= 1.0;
  flat_steps_ = all_flat ? flat_steps_ + 1 : 0;
  if (all_flat && !warned_flat_ && warn_) {
    warned_flat_ = true;
    log_warn("step {}: every group's rewards are all equal, so no sample has an advantage this step", step);
  }
  if (config_.zero_variance_steps > 0 && flat_steps_ >= config_.zero_variance_steps)
    return Status::error(fmt::format(
        "stopping at step {}: every group's rewards were all equal for {} steps in a row "
        "(trainer.guards.zero_variance_steps = {}); the policy gets no learning signal. Check the rewards on a few "
        "samples (`grpo reward`), the data's gold answers, or raise rollout.temperature",
        step, flat_steps_, config_.zero_variance_steps));

  int64_t evaluations = 0, errors = 0, updates = 0, skipped = 0;
  for (const StepHealth& h : window_) {
    evaluations += h.reward_evaluations;
    errors += h.reward_errors;
    updates += h.updates;
    skipped += h.skipped_updates;
  }
  if (health.reward_errors > 0 && !warned_errors_ && warn_) {
    warned_errors_ = true;
    log_warn("step {}: {} of {} reward evaluations failed and were scored reward.error_score", step,
             health.reward_errors, health.reward_evaluations);
  }
  const double error_fraction = evaluations > 0 ? static_cast<double>(errors) / static_cast<double>(evaluations) : 0.0;
  if (config_.max_reward_error_fraction > 0 && error_fraction > config_.max_reward_error_fraction)
    return Status::error(fmt::format(
        "stopping at step {}: {} of {} reward evaluations failed over the last {} steps ({:.0f}% > "
        "trainer.guards.max_reward_error_fraction = {}); the run would train on error scores. See the reward "
        "errors logged above",
        step, errors, evaluations, window_.size(), 100.0 * error_fraction, config_.max_reward_error_fraction));

  if (health.skipped_updates > 0 && !warned_skipped_ && warn_) {
    warned_skipped_ = true;
    log_warn("step {}: {} of {} optimizer updates skipped for a non-finite gradient norm", step,
             health.skipped_updates, health.updates);
  }
  const double skipped_fraction = updates > 0 ? static_cast<double>(skipped) / static_cast<double>(updates) : 0.0;
  if (config_.max_skipped_update_fraction > 0 && skipped_fraction > config_.max_skipped_update_fraction)
    return Status::error(fmt::format(
        "stopping at step {}: {} of {} optimizer updates were skipped for non-finite gradients over the last {} "
        "steps ({:.0f}% > trainer.guards.max_skipped_update_fraction = {}); the model is not training. Check "
        "optimizer.lr and the rewards for huge values",
        step, skipped, updates, window_.size(), 100.0 * skipped_fraction, config_.max_skipped_update_fraction));
  return Status::ok();
}

}  // namespace grpo
