#pragma once
// Evaluation during training (eval.every_steps): the dev set sampled and judged as `grpo eval` judges
// its sets, its numbers in the step's metrics as dev/pass@1, dev/pass@k, dev/cons@k, dev/format; and
// the early end of eval.stop_at_pass_at_1, which lets a cold start stop once the model has a
// foothold on the task instead of after a step count whose outcome differs from seed to seed.

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "core/config.h"
#include "core/thread_pool.h"
#include "trainer/eval_sets.h"

namespace grpo {

class Communicator;
class ShardedDecoder;
struct Policy;

class DevEvaluation {
 public:
  // Null when eval.every_steps is 0. Reads and checks the set, so call it before the model loads;
  // throws naming the key for an unreadable set, or for eval.stop_at_pass_at_1 without
  // eval.every_steps (a stop that could never be checked).
  static std::unique_ptr<DevEvaluation> from_config(const Config& config);

  // Throws naming the set and problem when a prompt plus the new tokens exceeds the model's context.
  void check_prompt_lengths(const Policy& policy) const;

  bool due(int64_t step) const { return step % config_.eval.every_steps == 0; }

  // A collective over `comm` (a stage-3 policy is gathered whole for it): the dev metrics, the same
  // on every rank.
  std::map<std::string, double> evaluate(Policy& policy, ShardedDecoder* sharded, Communicator& comm);

  // Counts `pass_at_1` toward eval.stop_at_pass_at_1 (an evaluation below it starts the count
  // again) and says whether eval.stop_consecutive evaluations in a row have now reached it.
  bool record(double pass_at_1) {
    const bool reached = config_.eval.stop_at_pass_at_1.has_value() && pass_at_1 >= *config_.eval.stop_at_pass_at_1;
    streak_ = reached ? streak_ + 1 : 0;
    return reached && streak_ >= config_.eval.stop_consecutive;
  }
  // Evaluations in a row at the target so far: kept in checkpoints, so that a resume goes on counting.
  int64_t streak() const { return streak_; }
  void restore_streak(int64_t streak) { streak_ = streak; }

 private:
  DevEvaluation(const Config& config, EvalSet set);

  Config config_;
  EvalSet set_;
  ThreadPool reward_pool_;
  int64_t streak_ = 0;
};

}  // namespace grpo
