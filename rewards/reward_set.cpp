#include "rewards/reward_set.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <future>
#include <set>
#include <stdexcept>
#include <thread>

#include <fmt/format.h>

namespace grpo {
namespace {

struct TaskOutcome {
  RewardScore score;
  std::string error;  // empty when scored
};

}  // namespace

StatusOr<RewardSet> RewardSet::create(const std::vector<RewardFunctionConfig>& functions) {
  if (functions.empty()) return Status::error("reward.functions is empty: name at least one reward");
  RewardSet set;
  std::set<std::string> seen;
  for (size_t i = 0; i < functions.size(); ++i) {
    const RewardFunctionConfig& f = functions[i];
    StatusOr<std::unique_ptr<Reward>> reward = make_reward(f.name, f.options);
    if (!reward) return Status::error(fmt::format("reward.functions[{}]: {}", i, reward.status().message()));
    const std::string label = f.label.empty() ? f.name : f.label;
    if (!seen.insert(label).second)
      return Status::error(fmt::format("reward.functions[{}]: label '{}' is used twice; set `label`", i, label));
    set.rewards_.push_back(std::shared_ptr<const Reward>(std::move(reward).value()));
    set.labels_.push_back(label);
    set.weights_.push_back(f.weight);
  }
  return set;
}

std::pair<std::string, std::string> RewardSet::missing_field(const nlohmann::json& fields) const {
  for (size_t r = 0; r < rewards_.size(); ++r) {
    const std::vector<std::string> missing = rewards_[r]->missing_fields(fields);
    if (!missing.empty()) return {labels_[r], missing.front()};
  }
  return {};
}

size_t scoring_threads(const RewardConfig& reward) {
  return reward.threads > 0 ? static_cast<size_t>(reward.threads) : std::max(1u, std::thread::hardware_concurrency());
}

std::vector<SampleScores> RewardSet::score(const std::vector<RewardSample>& samples, const RewardConfig& policy,
                                           ThreadPool& pool, ScoringStats* stats) const {
  using Clock = std::chrono::steady_clock;
  struct Task {
    std::shared_ptr<std::atomic<int64_t>> started_ns = std::make_shared<std::atomic<int64_t>>(0);
    std::future<TaskOutcome> future;
  };
  std::vector<Task> tasks;
  tasks.reserve(samples.size() * rewards_.size());
  for (const RewardSample& sample : samples) {
    for (const auto& reward : rewards_) {
      if (reward->scores_batches()) {
        tasks.emplace_back();  // scored below, all samples at once
        continue;
      }
      Task task;
      auto started = task.started_ns;
      // The task owns copies of what it needs: a timed-out task may outlive this call.
      task.future = pool.submit([reward, sample, started]() -> TaskOutcome {
        started->store(Clock::now().time_since_epoch().count());
        TaskOutcome outcome;
        try {
          outcome.score = reward->score(sample);
          // NaN or Inf would poison the group's advantages (and, in training, skip every update):
          // it is a failure to score, never a value.
          if (!std::isfinite(outcome.score.score))
            outcome.error = fmt::format("non-finite score {}", outcome.score.score);
        } catch (const std::exception& e) {
          outcome.error = e.what();
        } catch (...) {
          outcome.error = "unknown exception";
        }
        return outcome;
      });
      tasks.push_back(std::move(task));
    }
  }

  // Batch rewards run here while the pool works through the per-sample tasks.
  std::vector<std::vector<TaskOutcome>> batch_outcomes(rewards_.size());
  for (size_t r = 0; r < rewards_.size(); ++r) {
    if (!rewards_[r]->scores_batches()) continue;
    std::vector<TaskOutcome>& outcomes = batch_outcomes[r];
    outcomes.resize(samples.size());
    std::string error;
    try {
      std::vector<RewardScore> scores = rewards_[r]->score_batch(samples);
      if (scores.size() != samples.size())
        error = fmt::format("returned {} scores for {} samples", scores.size(), samples.size());
      else
        for (size_t s = 0; s < samples.size(); ++s) {
          outcomes[s].score = std::move(scores[s]);
          if (!std::isfinite(outcomes[s].score.score))
            outcomes[s].error = fmt::format("non-finite score {}", outcomes[s].score.score);
        }
    } catch (const std::exception& e) {
      error = e.what();
    } catch (...) {
      error = "unknown exception";
    }
    if (!error.empty())
      for (TaskOutcome& outcome : outcomes) outcome.error = "(batch of " + std::to_string(samples.size()) + ") " + error;
  }

  ScoringStats local;
  std::vector<SampleScores> results(samples.size());
  const auto timeout = std::chrono::duration<double>(policy.timeout_s);
  for (size_t s = 0; s < samples.size(); ++s) {
    SampleScores& out = results[s];
    for (size_t r = 0; r < rewards_.size(); ++r) {
      Task& task = tasks[s * rewards_.size() + r];
      const std::string& label = labels_[r];
      std::string error;
      TaskOutcome outcome;
      if (rewards_[r]->scores_batches()) {
        outcome = batch_outcomes[r][s];
        error = outcome.error;
      }
      // The clock starts when a worker picks the task up, not while it waits in the queue.
      while (error.empty() && task.future.valid()) {
        if (task.future.wait_for(std::chrono::milliseconds(5)) == std::future_status::ready) {
          outcome = task.future.get();
          error = outcome.error;
          break;
        }
        const int64_t started = task.started_ns->load();
        if (started != 0 && Clock::now() - Clock::time_point(Clock::duration(started)) > timeout) {
          error = fmt::format("timed out after {} s", policy.timeout_s);
          ++local.timeouts;
          break;
        }
      }
      if (!error.empty()) {
        ++local.errors;
        const std::string message = fmt::format("reward '{}' failed on sample '{}': {}", label, samples[s].id, error);
        if (policy.on_error == RewardErrorPolicy::kFail) throw std::runtime_error(message);
        out.errors.push_back(message);
        out.rewards[label] = policy.error_score;
        out.total += weights_[r] * policy.error_score;
        continue;
      }
      out.rewards[label] = outcome.score.score;
      out.total += weights_[r] * outcome.score.score;
      out.reasons[label] = outcome.score.reason;
      for (const auto& [name, value] : outcome.score.components) out.components[label + "." + name] = value;
    }
  }
  local.samples = static_cast<int64_t>(samples.size());
  if (stats) *stats = local;
  return results;
}

}  // namespace grpo
