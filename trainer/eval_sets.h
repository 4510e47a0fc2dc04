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

namespace grpo {

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

// `prompt_template` with each {name} replaced by `fields[name]` (a string as is, a list by its
// items one per line, anything else as JSON); {{ and }} are literal braces, and a brace that does
// not enclose a name stays as written (\boxed{}). A missing field is an error naming it.
StatusOr<std::string> render_prompt_template(const std::string& prompt_template, const nlohmann::json& fields);

}  // namespace grpo
