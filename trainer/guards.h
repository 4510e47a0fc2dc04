#pragma once
// Guards that stop a GRPO run which cannot learn (trainer.guards.*): every group's rewards flat
// for K steps in a row, or too many failed reward evaluations or skipped updates over a window of
// recent steps. Each condition is logged as a warning the first time it is seen. The inputs are
// values every rank already holds identically (reduced metrics), so all ranks decide alike and
// none is left waiting in a collective.

#include <cstdint>
#include <deque>

#include "core/config.h"
#include "core/status.h"

namespace grpo {

// One step's health, identical on every rank.
struct StepHealth {
  double zero_std_group_fraction = 0;  // groups whose rewards were all equal, over all groups
  int64_t reward_evaluations = 0;      // samples times rewards, over all ranks
  int64_t reward_errors = 0;           // of them, failed (threw, timed out, non-finite)
  int64_t updates = 0;                 // optimizer updates attempted
  int64_t skipped_updates = 0;         // of them, skipped for a non-finite gradient norm
};

class TrainingGuards {
 public:
  // `warn`: log the first-time warnings (one rank does, so they are not repeated per rank).
  TrainingGuards(const GuardConfig& config, bool warn) : config_(config), warn_(warn) {}
  // Records step `step`'s health; an error naming the guard, the numbers and the key to change
  // when one trips.
  Status observe(int64_t step, const StepHealth& health);

 private:
  GuardConfig config_;
  bool warn_;
  int64_t flat_steps_ = 0;        // consecutive steps with every group flat
  std::deque<StepHealth> window_;  // the last window_steps steps
  bool warned_flat_ = false, warned_errors_ = false, warned_skipped_ = false;
};

}  // namespace grpo
