#pragma once
// How `grpo eval` judges k samples per problem with any reward set: which samples are correct,
// how their answers are grouped for cons@k, and the pass@k ladder. No model and no tensors, so
// tests can feed it known completions (HumanEval's canonical solutions) through the very path eval
// scores with. The rules are documented in docs/training.md, "Correct, pass@k and cons@k".

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/config.h"
#include "core/thread_pool.h"
#include "rewards/reward_set.h"
#include "trainer/data.h"

namespace grpo {

// A set's rule for "correct". Every deciding reward must pass: one that reports a `correct`
// component passes when it is at least 1 (math), any other when its unweighted score is at least
// `threshold` (code: the share of tests passed). With no deciding reward, the weighted total must
// reach `threshold`. A reward that failed to score never passes.
struct EvalJudge {
  std::vector<std::string> deciding;  // reward labels; empty = the weighted total decides
  double threshold = 1.0;
  EvalVote vote = EvalVote::kMath;    // resolved: never kAuto
  std::string rule;                   // the rule in words, for the table and the JSON
};

// The judge of a set scored by `functions` (its resolved reward functions); `where` names the
// config key in errors (an unknown label in correct_rewards).
StatusOr<EvalJudge> make_eval_judge(const std::vector<RewardFunctionConfig>& functions, const EvalDatasetConfig& set,
                                    const std::string& where);

bool sample_correct(const SampleScores& scores, const EvalJudge& judge);

// The answer a completion votes for in cons@k, nullopt when it gives none: math: the final answer
// (extract_final_answer); code: the extracted program without trailing spaces and blank lines;
// text: what follows </think> (the whole completion without one), trimmed.
std::optional<std::string> vote_answer(const std::string& completion, EvalVote vote);
// Whether two answers count as one vote: math by equivalence, code and text by equal text.
bool same_answer(const std::string& a, const std::string& b, EvalVote vote);

struct ProblemTally {
  int64_t correct = 0;          // samples the judge accepts
  std::string majority;         // the answer most samples gave (ties: the one given first); "" when none
  int64_t majority_votes = 0;
  bool consensus = false;       // cons@k: the majority's first sample is correct
};

// One problem's k samples: `completions[j]` scored `scores[j]`.
ProblemTally tally_problem(const std::vector<std::string>& completions, const std::vector<SampleScores>& scores,
                           const EvalJudge& judge);

// The k of the pass@k ladder for n samples: 1, 2, 4, ... below n, then n.
std::vector<int64_t> pass_ladder(int64_t n);

// Sums over a set's problems (this rank's share), ready to be reduced over ranks.
struct EvalSetTally {
  int64_t problems = 0;
  int64_t samples = 0;            // k per problem
  double correct = 0;             // correct samples
  std::vector<double> pass_at;    // per pass_ladder(k): sum over problems of pass@k
  double consensus = 0;           // problems whose majority answer is correct
  double format_ok = 0;           // samples in the strict <think>/<answer> format
  double response_tokens = 0;
  double reward_errors = 0;       // reward evaluations that failed (reward.on_error: score)
  std::map<std::string, double> reward_sums;  // label -> sum of unweighted scores
  // One per problem, in order: {id, correct, majority, votes, gold}.
  nlohmann::json problem_rows = nlohmann::json::array();

  // Every sum in one fixed order (labels sorted), and back: the all-reduce payload.
  std::vector<double> flatten() const;
  void unflatten(const std::vector<double>& values);
};

// Scores `completions` (k per problem, problem-major: row p * k + j) with `rewards` and tallies
// them by `judge`. `completion_tokens` holds each row's length (-1 when unknown).
EvalSetTally score_eval_samples(const std::vector<const Example*>& problems, const std::vector<std::string>& completions,
                                const std::vector<int64_t>& completion_tokens, int64_t k, const RewardSet& rewards,
                                const RewardConfig& reward_config, const EvalJudge& judge, ThreadPool& pool);

}  // namespace grpo
