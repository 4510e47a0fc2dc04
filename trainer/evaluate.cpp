// Evaluation as in the DeepSeek-R1 report: k samples per problem at temperature 0.6 / top-p 0.95;
// pass@1 is the mean correctness, pass@k the unbiased estimator, cons@k the majority vote.

#include <chrono>
#include <filesystem>
#include <fstream>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "core/logging.h"
#include "rewards/builtin_rewards.h"
#include "rewards/math_grader.h"
#include "rollout/engine.h"
#include "trainer/communicator.h"
#include "trainer/data.h"
#include "trainer/policy.h"
#include "trainer/trainers.h"

namespace grpo {

double pass_at_k(int64_t n, int64_t c, int64_t k) {
  if (n - c < k) return 1.0;
  double miss = 1.0;  // C(n-c, k) / C(n, k) as a product, without overflow
  for (int64_t i = n - c + 1; i <= n; ++i) miss *= 1.0 - static_cast<double>(k) / static_cast<double>(i);
  return 1.0 - miss;
}

EvalSummary run_eval(const Config& config) {
  Communicator& comm = world();
  configure_logging(comm.rank(), LogSettings{config.logging.level, config.logging.all_ranks});
  const auto started = std::chrono::steady_clock::now();
  StatusOr<Policy> policy = load_policy(config.model, static_cast<uint64_t>(config.trainer.seed));
  if (!policy) throw std::runtime_error(policy.status().message());
  StatusOr<Dataset> data = load_dataset(config.data.eval_path, config.data);
  if (!data) throw std::runtime_error("data.eval_path: " + data.status().message());
  std::vector<Example>& problems = data->examples;
  if (config.eval.max_problems > 0 && static_cast<int64_t>(problems.size()) > config.eval.max_problems)
    problems.resize(static_cast<size_t>(config.eval.max_problems));
  const int64_t total = static_cast<int64_t>(problems.size());
  const int64_t begin = total * comm.rank() / comm.size(), end = total * (comm.rank() + 1) / comm.size();
  const int64_t k = config.eval.samples;
  auto format = make_reward("format", {{"mode", "strict"}});

  GenerationOptions generation;
  generation.sampling.temperature = config.eval.temperature;
  generation.sampling.top_p = config.eval.top_p;
  generation.max_new_tokens = config.rollout.max_new_tokens;
  generation.group_size = k;
  generation.stop_token_ids = policy->stop_token_ids;
  generation.pad_id = policy->pad_id;

  // sums: correct samples, pass@k, cons@k, format ok, response tokens
  std::vector<double> sums(5, 0.0);
  nlohmann::json per_problem = nlohmann::json::array();
  const int64_t chunk = 32;  // problems per generate call
  for (int64_t first = begin; first < end; first += chunk) {
    const int64_t last = std::min(end, first + chunk);
    std::vector<std::vector<int64_t>> prompts;
    std::vector<uint64_t> keys;
    for (int64_t i = first; i < last; ++i) {
      prompts.push_back(encode_prompt(*policy, problems[static_cast<size_t>(i)].prompt));
      keys.push_back(static_cast<uint64_t>(i));
    }
    const RolloutBatch batch =
        generate(policy->model, prompts, generation, rollout_seeds(static_cast<uint64_t>(config.trainer.seed), keys, k),
                 &*policy->tokenizer);
    for (int64_t p = 0; p < last - first; ++p) {
      const Example& e = problems[static_cast<size_t>(first + p)];
      const std::string gold = gold_answer(e.answer);
      int64_t correct = 0;
      std::vector<std::pair<std::string, int64_t>> votes;  // distinct answers (by equivalence) and counts
      for (int64_t j = 0; j < k; ++j) {
        const int64_t row = p * k + j;
        const int64_t len = batch.completion_mask[row].sum().item<int64_t>();
        const at::Tensor ids = batch.completion_ids[row].narrow(0, 0, len).contiguous();
        const std::string text = policy->tokenizer->decode(
            std::vector<int64_t>(ids.data_ptr<int64_t>(), ids.data_ptr<int64_t>() + len), true);
        sums[4] += static_cast<double>(len);
        RewardSample sample;
        sample.completion = text;
        sums[3] += (*format)->score(sample).score;
        const auto answer = extract_final_answer(text);
        if (!answer) continue;
        if (math_equivalent(*answer, gold).equivalent) ++correct;
        bool counted = false;
        for (auto& [representative, count] : votes)
          if (!counted && math_equivalent(*answer, representative).equivalent) {
            ++count;
            counted = true;
          }
        if (!counted) votes.emplace_back(*answer, 1);
      }
      std::string majority;
      int64_t best = 0;
      for (const auto& [answer, count] : votes)
        if (count > best) {
          best = count;
          majority = answer;
        }
      const bool consensus = best > 0 && math_equivalent(majority, gold).equivalent;
      sums[0] += static_cast<double>(correct);
      sums[1] += pass_at_k(k, correct, k);
      sums[2] += consensus ? 1.0 : 0.0;
      per_problem.push_back({{"id", e.id}, {"correct", correct}, {"majority", majority}, {"gold", gold}});
    }
  }
  comm.all_reduce_sum(sums);
  EvalSummary s;
  s.problems = total;
  s.samples = k;
  const double n = std::max<double>(1.0, static_cast<double>(total));
  s.pass_at_1 = sums[0] / (n * static_cast<double>(k));
  s.pass_at_k = sums[1] / n;
  s.cons_at_k = sums[2] / n;
  s.format_ok = sums[3] / (n * static_cast<double>(k));
  s.mean_response_tokens = sums[4] / (n * static_cast<double>(k));
  s.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();

  if (comm.rank() == 0) {
    const std::string output = config.eval.output.empty() ? config.trainer.run_dir + "/eval.json" : config.eval.output;
    std::filesystem::create_directories(std::filesystem::path(output).parent_path());
    const nlohmann::json results = {{"model", config.model.path}, {"dataset", config.data.eval_path}, {"problems", s.problems},
                                    {"samples_per_problem", k}, {"temperature", config.eval.temperature},
                                    {"top_p", config.eval.top_p}, {"pass@1", s.pass_at_1},
                                    {fmt::format("pass@{}", k), s.pass_at_k}, {fmt::format("cons@{}", k), s.cons_at_k},
                                    {"format_ok", s.format_ok}, {"mean_response_tokens", s.mean_response_tokens},
                                    {"seconds", s.seconds}, {"rank0_problems", per_problem}};
    if (Status st = write_file_atomic(output, results.dump(2) + "\n"); !st.is_ok()) throw std::runtime_error(st.message());
  }
  return s;
}

}  // namespace grpo
