#pragma once
// Scores batches of samples with a weighted sum of rewards on a thread pool. A reward that throws,
// runs past the timeout or returns a non-finite score (NaN, Inf) either fails the batch with an error naming the sample and the reward,
// or (on_error: score) gets the configured score; either way it is counted and reported.

#include <cstddef>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/config.h"
#include "core/thread_pool.h"
#include "rewards/reward.h"

namespace grpo {

struct SampleScores {
  double total = 0.0;                          // sum of weight * score
  std::map<std::string, double> rewards;       // label -> unweighted score
  std::map<std::string, double> components;    // "label.component" -> value
  std::map<std::string, std::string> reasons;  // label -> reason
  std::vector<std::string> errors;             // "label: message" for rewards that failed
};

struct ScoringStats {
  int64_t samples = 0;
  int64_t errors = 0;    // rewards that threw, timed out or returned a non-finite score
  int64_t timeouts = 0;  // rewards that ran past the timeout
};

// Threads of the pool that scores samples (GRPO, eval, dev evaluation, `grpo sample`, `grpo reward`):
// reward.threads, or every core when it is 0.
size_t scoring_threads(const RewardConfig& reward);

class RewardSet {
 public:
  static StatusOr<RewardSet> create(const std::vector<RewardFunctionConfig>& functions);

  // Scores every sample. With on_error = fail, the first failure throws std::runtime_error
  // naming the sample id and the reward; otherwise failures score error_score.
  std::vector<SampleScores> score(const std::vector<RewardSample>& samples, const RewardConfig& policy,
                                  ThreadPool& pool, ScoringStats* stats = nullptr) const;

  const std::vector<std::string>& labels() const { return labels_; }

  // The first field one of the rewards needs and `fields` (a sample's dataset fields) lacks, as
  // {reward label, field name}; empty names when every reward has what it needs.
  std::pair<std::string, std::string> missing_field(const nlohmann::json& fields) const;

 private:
  std::vector<std::shared_ptr<const Reward>> rewards_;
  std::vector<std::string> labels_;
  std::vector<double> weights_;
};

}  // namespace grpo
