#include "trainer/dev_evaluation.h"

#include <stdexcept>

#include <ATen/ATen.h>
#include <fmt/format.h>

#include "dist/communicator.h"
#include "trainer/fsdp.h"
#include "trainer/policy.h"

namespace grpo {

DevEvaluation::DevEvaluation(const Config& config, EvalSet set)
    : config_(config), set_(std::move(set)), reward_pool_(scoring_threads(config.reward)) {}

std::unique_ptr<DevEvaluation> DevEvaluation::from_config(const Config& config) {
  if (config.eval.every_steps == 0) {
    if (config.eval.stop_at_pass_at_1)
      throw std::runtime_error(fmt::format(
          "eval.stop_at_pass_at_1 {} is checked at the evaluations of eval.every_steps, which is 0 (never); set "
          "eval.every_steps (e.g. 50) or remove eval.stop_at_pass_at_1",
          *config.eval.stop_at_pass_at_1));
    return nullptr;
  }
  StatusOr<EvalSet> set = load_dev_set(config);
  if (!set) throw std::runtime_error(set.status().message());
  return std::unique_ptr<DevEvaluation>(new DevEvaluation(config, std::move(set).value()));
}

void DevEvaluation::check_prompt_lengths(const Policy& policy) const {
  grpo::check_prompt_lengths(config_, policy, set_);
}

std::map<std::string, double> DevEvaluation::evaluate(Policy& policy, ShardedDecoder* sharded, Communicator& comm) {
  at::NoGradGuard no_grad;
  const FullParameters whole(sharded);
  const EvalSummary s = evaluate_dataset(config_, policy, set_, reward_pool_, comm).summary;
  return {{"dev/pass@1", s.pass_at_1},
          {"dev/pass@k", s.pass_at_k},
          {"dev/cons@k", s.cons_at_k},
          {"dev/format", s.format_ok},
          {"dev/response_tokens", s.mean_response_tokens},
          {"dev/seconds", s.seconds}};
}

}  // namespace grpo
