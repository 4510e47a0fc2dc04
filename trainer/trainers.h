#pragma once
// The training and evaluation loops behind `grpo sft`, `grpo train` and `grpo eval`. Each runs on
// every rank of the job (data parallel over examples/prompts) and writes into trainer.run_dir.

#include <cstdint>
#include <map>
#include <string>

#include "core/config.h"

namespace grpo {

struct RunSummary {
  int64_t first_step = 0;   // 0, or the step a resumed run started from
  int64_t last_step = 0;
  double seconds = 0;
  std::map<std::string, double> last_metrics;
};

// Supervised fine-tuning on data.train_path's worked solutions (loss on response tokens only).
RunSummary run_sft(const Config& config);

// GRPO on data.train_path's prompts with reward.functions.
RunSummary run_grpo(const Config& config);

struct EvalSummary {
  std::string name;           // the dataset's name (eval.datasets[].name; "eval" for data.eval_path)
  int64_t problems = 0;
  int64_t samples = 0;        // per problem
  double pass_at_1 = 0;       // mean correctness over every sample
  double pass_at_k = 0;       // unbiased estimator with n = k = samples
  double cons_at_k = 0;       // the majority answer's sample is correct
  double format_ok = 0;       // share of samples with <think>...</think><answer>...</answer>
  double mean_response_tokens = 0;
  int64_t reward_errors = 0;  // reward evaluations that failed (counted under reward.on_error: score)
  double seconds = 0;
};

// The `schema` value of the results JSON; raised when a key changes meaning or goes away.
constexpr int kEvalResultsSchema = 2;  // 2: `problems` is every problem's row, `problem_count` their number

// pass@1 over eval.samples samples, pass@k and cons@k on each held-out set (eval.datasets, or
// data.eval_path), each judged by its reward set; writes one JSON with a result per set
// (eval.output, atomically, once every set is done).
std::vector<EvalSummary> run_eval(const Config& config);

// Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k).
double pass_at_k(int64_t n, int64_t c, int64_t k);

}  // namespace grpo
