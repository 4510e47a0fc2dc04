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
#include "dist/communicator.h"
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

namespace {

struct DatasetResult {
  EvalSummary summary;
  nlohmann::json rank0_problems = nlohmann::json::array();
};

// k samples for every problem of one held-out set, this rank's share of it; sums over ranks.
DatasetResult evaluate_dataset(const Config& config, Policy& policy, std::vector<Example>& problems, Communicator& comm) {
  const auto started = std::chrono::steady_clock::now();
  if (config.eval.max_problems > 0 && static_cast<int64_t>(problems.size()) > config.eval.max_problems)
    problems.resize(static_cast<size_t>(config.eval.max_problems));
  const int64_t total = static_cast<int64_t>(problems.size());
  const int64_t begin = total * comm.rank() / comm.size(), end = total * (comm.rank() + 1) / comm.size();
  const int64_t k = config.eval.samples;
  auto format = make_reward("format", {{"mode", "strict"}});

  // rollout.* (stop strings, top-k, min-p, length, batching) with eval's own temperature and top-p.
  GenerationOptions generation = generation_options(config.rollout, policy, k);
  generation.sampling.temperature = config.eval.temperature;
  generation.sampling.top_p = config.eval.top_p;

  // sums: correct samples, pass@k, cons@k, format ok, response tokens
  std::vector<double> sums(5, 0.0);
  DatasetResult result;
  // One generate call for all of this rank's problems: 32 (or rollout.max_concurrent_prompts)
  // decode at once and a problem whose samples have all finished hands its slot to the next
  // (continuous batching), so nobody waits for the longest sample of a fixed chunk.
  if (generation.max_concurrent_prompts == 0) generation.max_concurrent_prompts = 32;
  std::vector<std::vector<int64_t>> prompts;
  std::vector<uint64_t> keys;
  for (int64_t i = begin; i < end; ++i) {
    prompts.push_back(encode_prompt(policy, problems[static_cast<size_t>(i)].prompt));
    keys.push_back(static_cast<uint64_t>(i));
  }
  const RolloutBatch batch = prompts.empty() ? RolloutBatch{} :
      generate(policy.model, prompts, generation, rollout_seeds(static_cast<uint64_t>(config.trainer.seed), keys, k),
               &*policy.tokenizer);
  for (int64_t p = 0; p < end - begin; ++p) {
    const Example& e = problems[static_cast<size_t>(begin + p)];
    const std::string gold = gold_answer(e.answer);
    int64_t correct = 0;
    std::vector<std::pair<std::string, int64_t>> votes;  // distinct answers (by equivalence) and counts
    for (int64_t j = 0; j < k; ++j) {
      const int64_t row = p * k + j;
      const std::vector<int64_t> tokens = completion_tokens(batch, row);
      const std::string text = policy.tokenizer->decode(tokens, true);
      sums[4] += static_cast<double>(tokens.size());
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
    result.rank0_problems.push_back({{"id", e.id}, {"correct", correct}, {"majority", majority}, {"gold", gold}});
  }
  comm.all_reduce_sum(sums);
  EvalSummary& s = result.summary;
  s.problems = total;
  s.samples = k;
  const double n = std::max<double>(1.0, static_cast<double>(total));
  s.pass_at_1 = sums[0] / (n * static_cast<double>(k));
  s.pass_at_k = sums[1] / n;
  s.cons_at_k = sums[2] / n;
  s.format_ok = sums[3] / (n * static_cast<double>(k));
  s.mean_response_tokens = sums[4] / (n * static_cast<double>(k));
  s.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return result;
}

// The held-out sets to run: eval.datasets, or data.eval_path alone.
std::vector<EvalDatasetConfig> eval_datasets(const Config& config) {
  if (!config.eval.datasets.empty()) return config.eval.datasets;
  if (config.data.eval_path.empty()) return {};
  return {EvalDatasetConfig{"eval", config.data.eval_path, "", ""}};
}

}  // namespace

std::vector<EvalSummary> run_eval(const Config& config) {
  Communicator& comm = world();
  configure_logging(comm.rank(), LogSettings{config.logging.level, config.logging.all_ranks});
  const std::vector<EvalDatasetConfig> sets = eval_datasets(config);
  if (sets.empty()) throw std::runtime_error("nothing to evaluate: set data.eval_path or eval.datasets");
  // Every set is read before the model is loaded, so a bad path or line fails at once.
  std::vector<Dataset> loaded;
  for (size_t i = 0; i < sets.size(); ++i) {
    DataConfig mapping = config.data;
    if (!sets[i].prompt_field.empty()) mapping.prompt_field = sets[i].prompt_field;
    if (!sets[i].answer_field.empty()) mapping.answer_field = sets[i].answer_field;
    StatusOr<Dataset> data = load_dataset(sets[i].path, mapping);
    const std::string key = config.eval.datasets.empty() ? "data.eval_path" : fmt::format("eval.datasets[{}].path", i);
    if (!data) throw std::runtime_error(key + ": " + data.status().message());
    if (data->examples.empty()) throw std::runtime_error(key + ": " + sets[i].path + " has no problems");
    loaded.push_back(std::move(data).value());
  }
  StatusOr<Policy> policy = load_policy(config.model, static_cast<uint64_t>(config.trainer.seed));
  if (!policy) throw std::runtime_error(policy.status().message());

  std::vector<EvalSummary> summaries;
  nlohmann::json datasets = nlohmann::json::array();
  for (size_t i = 0; i < sets.size(); ++i) {
    DatasetResult r = evaluate_dataset(config, *policy, loaded[i].examples, comm);
    r.summary.name = sets[i].name;
    const EvalSummary& s = r.summary;
    const int64_t k = s.samples;
    datasets.push_back({{"name", s.name}, {"dataset", sets[i].path}, {"problems", s.problems}, {"pass@1", s.pass_at_1},
                        {fmt::format("pass@{}", k), s.pass_at_k}, {fmt::format("cons@{}", k), s.cons_at_k},
                        {"format_ok", s.format_ok}, {"mean_response_tokens", s.mean_response_tokens},
                        {"seconds", s.seconds}, {"rank0_problems", std::move(r.rank0_problems)}});
    summaries.push_back(s);
  }

  if (comm.rank() == 0) {
    const std::string output = config.eval.output.empty() ? config.trainer.run_dir + "/eval.json" : config.eval.output;
    std::filesystem::create_directories(std::filesystem::path(output).parent_path());
    const nlohmann::json results = {{"model", config.model.path}, {"samples_per_problem", config.eval.samples},
                                    {"temperature", config.eval.temperature}, {"top_p", config.eval.top_p},
                                    {"datasets", datasets}};
    if (Status st = write_file_atomic(output, results.dump(2) + "\n"); !st.is_ok()) throw std::runtime_error(st.message());
  }
  return summaries;
}

}  // namespace grpo
