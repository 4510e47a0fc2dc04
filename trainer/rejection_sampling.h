#pragma once
// Rejection sampling (`grpo sample`, the R1 recipe's stage 3 and the source of distillation data):
// k samples per prompt from a checkpoint, scored by the configured rewards, filtered, and written as
// an SFT set with each sample's provenance. The filters below are pure functions of a prompt's
// samples and sample.*; run_rejection_sampling is the model-backed driver.
//
// Work is split into parts of sample.prompts_per_part prompts, each written atomically as
// <run_dir>/sample_parts/part-NNNNNN.json once sampled and filtered. A part's rows are seeded by
// (trainer.seed, prompt index, sample index) and always hold the same prompts, so its contents do
// not depend on the number of ranks or on which attempt wrote it: a killed run resumes at the
// parts not yet written, and the merged output equals an uninterrupted one-rank run's.

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/config.h"
#include "rewards/reward.h"
#include "rewards/reward_set.h"

namespace grpo {

// Why a sample was dropped, in the order the filters run; the first that applies is counted.
enum class SampleVerdict {
  kKept,
  kTruncated,      // cut at rollout.max_new_tokens (sample.drop_truncated)
  kTooLong,        // more than sample.max_tokens tokens
  kRewardError,    // a reward failed on it (reward.on_error: score)
  kLowReward,      // total below sample.min_reward
  kNotCorrect,     // a sample.required_components component is not 1
  kBadFormat,      // not strict <think>...</think><answer>...</answer> (sample.require_format)
  kMixedLanguage,  // chain of thought below sample.min_language_share in sample.language
  kRepetitive,     // repeated n-gram share above sample.max_repeated_ngram_share
  kDuplicate,      // the same text as a sample already kept for this prompt (sample.deduplicate)
  kOverCap,        // the prompt already has sample.max_kept_per_prompt samples
};
const char* sample_verdict_name(SampleVerdict verdict);  // "kept", "truncated", "too_long", ...
const std::vector<SampleVerdict>& drop_verdicts();       // every verdict but kKept, in filter order

// One sampled completion as the filters see it.
struct SampleCandidate {
  std::string completion;       // decoded, special tokens removed
  int64_t tokens = 0;           // generated tokens, a stop token included
  std::vector<int64_t> token_ids;
  bool truncated = false;       // finished by length, not by a stop token or string
  SampleScores scores;          // empty when no reward is configured
};

// Share of the n-grams of `tokens` (sliding, n = `n`) equal to an earlier n-gram of the same
// sequence: 0 for no repetition, approaching 1 for one token repeated. 0 when shorter than n.
double repeated_ngram_share(const std::vector<int64_t>& tokens, int64_t n);

// The filters of sample.*. create() checks the options that cannot be checked per key.
class SampleFilter {
 public:
  static StatusOr<SampleFilter> create(const SampleConfig& options, bool has_rewards);

  // The verdict of the per-sample filters (everything but duplicates and the per-prompt cap).
  // Throws naming sample.required_components when a required component is not among the
  // sample's reward components (a typo would otherwise drop every sample).
  SampleVerdict judge(const SampleCandidate& candidate) const;

  // Verdicts of one prompt's samples, in sample order: judge() for each, then exact duplicates of
  // an earlier kept sample and samples past sample.max_kept_per_prompt are dropped.
  std::vector<SampleVerdict> judge_prompt(const std::vector<SampleCandidate>& candidates) const;

 private:
  SampleConfig options_;
  std::shared_ptr<const Reward> strict_format_;
};

// What a run (or one part of it) generated, kept and dropped.
struct SampleStats {
  int64_t prompts = 0;
  int64_t prompts_with_kept = 0;  // prompts with at least one kept sample
  int64_t generated = 0;
  int64_t kept = 0;
  std::map<std::string, int64_t> dropped;  // reason -> samples, every reason listed
  double reward_sum = 0;                   // total reward over generated samples
  double kept_reward_sum = 0;
  int64_t kept_tokens = 0;

  SampleStats();
  void add_prompt(const std::vector<SampleCandidate>& candidates, const std::vector<SampleVerdict>& verdicts);
  void merge(const SampleStats& other);
  nlohmann::json to_json() const;
  static SampleStats from_json(const nlohmann::json& json);
  std::string table() const;  // the printed summary, one row per reason
};

// The settings a part's contents depend on, as text: parts written under other settings must not
// be mixed into this run's output (model, data, seed, rollout, rewards, sample filters).
std::string sample_settings(const Config& config);

// Paths of a `grpo sample` run.
std::string sample_output_path(const Config& config);  // sample.output or <run_dir>/samples.jsonl
std::string sample_stats_path(const Config& config);   // <run_dir>/sample_stats.json
std::string sample_parts_dir(const Config& config);    // <run_dir>/sample_parts

struct SampleSummary {
  SampleStats stats;
  int64_t parts = 0;
  int64_t parts_resumed = 0;  // parts found written by an earlier attempt
  double seconds = 0;
};

// Samples, scores and filters this rank's share of the parts not yet written, then (rank 0)
// merges every part in prompt order into sample_output_path and sample_stats_path. Every rank
// calls it; the run directory must be claimed (locked, settings checked) first.
SampleSummary run_rejection_sampling(const Config& config);

}  // namespace grpo
