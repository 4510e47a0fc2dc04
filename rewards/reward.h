#pragma once
// The reward interface. A Reward scores one sample and returns a score, named components and a
// short reason; it throws when it cannot score (the scorer reports that loudly, never as a
// silent 0). Rewards know nothing of tensors.

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/status.h"

namespace grpo {

struct RewardSample {
  std::string id;            // names the sample in errors and logs
  std::string prompt;
  std::string completion;
  nlohmann::json fields;     // dataset fields: gold answer, tests, target language, ...
  int64_t completion_tokens = -1;  // length in tokens when known (the length reward needs it)
};

struct RewardScore {
  double score = 0.0;
  std::map<std::string, double> components;
  std::string reason;
};

class Reward {
 public:
  virtual ~Reward() = default;
  virtual RewardScore score(const RewardSample& sample) const = 0;
  // The dataset fields (keys of RewardSample::fields) this reward needs and `fields` lacks; the
  // dataset is checked with it when it loads, so a missing gold answer stops the run before any
  // rollout instead of scoring 0 at every step. Rewards that need no field keep the default.
  virtual std::vector<std::string> missing_fields(const nlohmann::json& fields) const {
    (void)fields;
    return {};
  }

  // Rewards that score better together (a model's forward pass, a batch normalization) say so;
  // RewardSet then calls score_batch once per scoring call, on the calling thread and without
  // the per-sample timeout. Returns one score per sample, in order.
  virtual bool scores_batches() const { return false; }
  virtual std::vector<RewardScore> score_batch(const std::vector<RewardSample>& samples) const {
    std::vector<RewardScore> scores;
    scores.reserve(samples.size());
    for (const RewardSample& sample : samples) scores.push_back(score(sample));
    return scores;
  }
};

// Builds a reward from its options (a JSON object); invalid options are a Status that names the
// option and what was expected.
using RewardFactory = std::function<StatusOr<std::unique_ptr<Reward>>(const nlohmann::json& options)>;

// The registry of reward names. Built-in rewards register themselves on first use; plugins and
// user code may add more.
void register_reward(const std::string& name, RewardFactory factory);
std::vector<std::string> registered_rewards();
StatusOr<std::unique_ptr<Reward>> make_reward(const std::string& name, const nlohmann::json& options);

// Reads options with errors that name the reward and the option. Unknown options are errors.
class RewardOptions {
 public:
  RewardOptions(std::string reward, const nlohmann::json& options) : reward_(std::move(reward)), options_(options) {}
  std::string string(const std::string& key, const std::string& fallback);
  double number(const std::string& key, double fallback);
  int64_t integer(const std::string& key, int64_t fallback);
  bool boolean(const std::string& key, bool fallback);
  nlohmann::json object(const std::string& key);               // a mapping; {} when absent
  std::vector<std::string> strings(const std::string& key);    // a list of strings; {} when absent
  // Call after reading every option: the first problem, or an unknown key.
  Status finish();

 private:
  void fail(const std::string& message);
  // The option `key` when `is_type` holds for it; else a recorded error naming `expected`.
  template <typename T>
  T typed(const std::string& key, T fallback, bool (nlohmann::json::*is_type)() const noexcept, const char* expected);
  std::string reward_;
  const nlohmann::json& options_;
  std::vector<std::string> known_;
  std::string error_;
};

}  // namespace grpo
