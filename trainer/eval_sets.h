#pragma once
// The held-out sets of `grpo eval` as the config describes them, read and checked before any model
// work: records (skip/limit, eval.max_problems), prompts rendered from prompt_template, each set's
// reward functions and judge, and every reward's fields present in every record.

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/config.h"
#include "core/status.h"
#include "rewards/reward_set.h"
#include "trainer/data.h"
#include "trainer/eval_scoring.h"
#include "trainer/trainers.h"

namespace grpo {

class Communicator;
class ThreadPool;
struct Policy;

struct EvalSet {
  EvalDatasetConfig config;
  std::string key;                              // "eval.datasets[i]" or "data.eval_path", for errors
  std::vector<RewardFunctionConfig> functions;  // resolved: the set's, reward.functions, or math
  RewardSet rewards;
  EvalJudge judge;
  std::vector<Example> problems;
};

// eval.datasets (or data.eval_path alone), loaded. An error names the key and, for a record, its
// file:line and what it lacks.
StatusOr<std::vector<EvalSet>> load_eval_sets(const Config& config);

// The set evaluated during training (eval.every_steps), named "dev": data.dev_path, else
// data.eval_path, judged by reward.functions (the math reward when that is empty).
StatusOr<EvalSet> load_dev_set(const Config& config);

// Positions past the model's context have no trained meaning: a prompt whose generation could run
// past it is an error before any sampling, as in training and `grpo generate`.
void check_prompt_lengths(const Config& config, const Policy& policy, const EvalSet& set);

struct DatasetResult {
  EvalSummary summary;
  EvalSetTally tally;  // summed over ranks; problem_rows gathered from every rank, in dataset order
};

// k = eval.samples samples for every problem of `set`, this rank's share of it, scored by the set's
// rewards and judged by its rule; sums over the ranks of `comm` and gathers every problem's row.
// A collective: every rank of `comm` calls it.
DatasetResult evaluate_dataset(const Config& config, Policy& policy, const EvalSet& set, ThreadPool& reward_pool,
                               Communicator& comm);

// `prompt_template` with each {name} replaced by `fields[name]` (a string as is, a list by its
// items one per line, anything else as JSON); {{ and }} are literal braces, and a brace that does
// not enclose a name stays as written (\boxed{}). A missing field is an error naming it.
StatusOr<std::string> render_prompt_template(const std::string& prompt_template, const nlohmann::json& fields);

}  // namespace grpo
