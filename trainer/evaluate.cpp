// Evaluation as in the DeepSeek-R1 report: k samples per problem at temperature 0.6 / top-p 0.95;
// pass@1 is the mean correctness, pass@k the unbiased estimator, cons@k the majority vote, where
// "correct" is each set's reward set and rule (trainer/eval_scoring.h).

#include <chrono>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "core/logging.h"
#include "core/thread_pool.h"
#include "rollout/engine.h"
#include "dist/communicator.h"
#include "trainer/eval_scoring.h"
#include "trainer/eval_sets.h"
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

// Every rank's problem rows after one another. Rank r holds the r-th contiguous slice of the set,
// so rank order is dataset order.
nlohmann::json gather_problem_rows(Communicator& comm, const nlohmann::json& mine) {
  // A model's answer may hold bytes that are not UTF-8; the results file replaces them anyway.
  const std::string local = mine.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  nlohmann::json rows = nlohmann::json::array();
  for (const std::string& part : all_gather_strings(comm, local))
    for (nlohmann::json& row : nlohmann::json::parse(part)) rows.push_back(std::move(row));
  return rows;
}

// A model's completion may hold bytes that are not UTF-8; they must not fail the whole run at the end.
std::string dump_replacing_invalid_utf8(const nlohmann::json& results) {
  return results.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

// One set's entry of the results JSON (docs/training.md, "The results JSON").
nlohmann::json dataset_json(const EvalSet& set, const DatasetResult& r) {
  const EvalSummary& s = r.summary;
  const EvalSetTally& t = r.tally;
  const double n = std::max<double>(1.0, static_cast<double>(s.problems));
  nlohmann::json pass_at = nlohmann::json::object();
  const std::vector<int64_t> ladder = pass_ladder(s.samples);
  for (size_t i = 0; i < ladder.size(); ++i) pass_at[std::to_string(ladder[i])] = t.pass_at[i] / n;
  nlohmann::json rewards = nlohmann::json::object();
  for (const auto& [label, sum] : t.reward_sums) rewards[label] = sum / (n * static_cast<double>(s.samples));
  nlohmann::json entry = {{"name", s.name},
                          {"dataset", set.config.path},
                          {"problem_count", s.problems},
                          {"samples", s.samples},
                          {"correct_rule", set.judge.rule},
                          {"pass@1", s.pass_at_1},
                          {"pass@k", s.pass_at_k},
                          {"cons@k", s.cons_at_k},
                          {"pass_at", pass_at},
                          {"rewards", rewards},
                          {"reward_errors", s.reward_errors},
                          {"format_ok", s.format_ok},
                          {"mean_response_tokens", s.mean_response_tokens},
                          {"seconds", s.seconds},
                          {"problems", t.problem_rows}};
  // The same two numbers under the names that carry k, as the tables print them.
  entry[fmt::format("pass@{}", s.samples)] = s.pass_at_k;
  entry[fmt::format("cons@{}", s.samples)] = s.cons_at_k;
  return entry;
}

}  // namespace

void check_prompt_lengths(const Config& config, const Policy& policy, const EvalSet& set) {
  const int64_t context = policy.model->options().max_position_embeddings;
  const bool own_length = config.eval.max_new_tokens > 0;
  const int64_t max_new = own_length ? config.eval.max_new_tokens : config.rollout.max_new_tokens;
  const char* key = own_length ? "eval.max_new_tokens" : "rollout.max_new_tokens";
  for (const Example& problem : set.problems) {
    const int64_t length = static_cast<int64_t>(encode_prompt(policy, problem.prompt).size());
    if (length + max_new > context)
      throw std::runtime_error(fmt::format(
          "eval set '{}', {}: prompt of {} tokens + {} {} = {} exceeds the model's context of {} tokens "
          "(max_position_embeddings); lower {} or use a model with a longer context",
          set.config.name, problem.source.empty() ? "problem '" + problem.id + "'" : problem.source, length, key,
          max_new, length + max_new, context, key));
  }
}

DatasetResult evaluate_dataset(const Config& config, Policy& policy, const EvalSet& set, ThreadPool& reward_pool,
                               Communicator& comm) {
  const auto started = std::chrono::steady_clock::now();
  const int64_t total = static_cast<int64_t>(set.problems.size());
  const ItemShare mine = share_of(total, comm.rank(), comm.size());
  const int64_t begin = mine.begin, end = mine.end;
  const int64_t k = config.eval.samples;

  // rollout.* (stop strings, top-k, min-p, batching) with eval's own temperature, top-p and length.
  RolloutConfig rollout = config.rollout;
  if (config.eval.max_new_tokens > 0) rollout.max_new_tokens = config.eval.max_new_tokens;
  GenerationOptions generation = generation_options(rollout, policy, k);
  generation.sampling.temperature = config.eval.temperature;
  generation.sampling.top_p = config.eval.top_p;

  // One generate call for all of this rank's problems: 32 (or rollout.max_concurrent_prompts)
  // decode at once and a problem whose samples have all finished hands its slot to the next
  // (continuous batching), so nobody waits for the longest sample of a fixed chunk.
  if (generation.max_concurrent_prompts == 0) generation.max_concurrent_prompts = 32;
  std::vector<std::vector<int64_t>> prompts;
  std::vector<uint64_t> keys;
  std::vector<const Example*> problems;
  for (int64_t i = begin; i < end; ++i) {
    problems.push_back(&set.problems[static_cast<size_t>(i)]);
    prompts.push_back(encode_prompt(policy, problems.back()->prompt));
    keys.push_back(static_cast<uint64_t>(i));
  }
  const RolloutBatch batch = prompts.empty() ? RolloutBatch{} :
      generate(policy.model, prompts, generation, rollout_seeds(static_cast<uint64_t>(config.trainer.seed), keys, k),
               &*policy.tokenizer);
  std::vector<std::string> completions;
  std::vector<int64_t> lengths;
  for (int64_t row = 0; row < (end - begin) * k; ++row) {
    const std::vector<int64_t> tokens = completion_tokens(batch, row);
    completions.push_back(policy.tokenizer->decode(tokens, true));
    lengths.push_back(static_cast<int64_t>(tokens.size()));
  }

  DatasetResult result;
  result.tally = score_eval_samples(problems, completions, lengths, k, set.rewards, config.reward, set.judge, reward_pool);
  std::vector<double> sums = result.tally.flatten();
  comm.all_reduce_sum(sums);
  result.tally.unflatten(sums);
  result.tally.problem_rows = gather_problem_rows(comm, result.tally.problem_rows);
  if (static_cast<int64_t>(result.tally.problem_rows.size()) != total)
    throw std::logic_error(fmt::format("eval set '{}': gathered {} problem rows for {} problems", set.config.name,
                                       result.tally.problem_rows.size(), total));

  const EvalSetTally& t = result.tally;
  EvalSummary& s = result.summary;
  s.name = set.config.name;
  s.problems = total;
  s.samples = k;
  const double n = std::max<double>(1.0, static_cast<double>(total));
  s.pass_at_1 = t.correct / (n * static_cast<double>(k));
  s.pass_at_k = t.pass_at.back() / n;
  s.cons_at_k = t.consensus / n;
  s.format_ok = t.format_ok / (n * static_cast<double>(k));
  s.mean_response_tokens = t.response_tokens / (n * static_cast<double>(k));
  s.reward_errors = static_cast<int64_t>(t.reward_errors);
  s.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return result;
}

std::vector<EvalSummary> run_eval(const Config& config) {
  Communicator& comm = world();
  configure_logging(comm.rank(), LogSettings{config.logging.level, config.logging.all_ranks});
  const std::string output = config.eval.output.empty() ? config.trainer.run_dir + "/eval.json" : config.eval.output;
  // A results file is this run's or none: a failed run must not leave an earlier run's behind.
  if (comm.rank() == 0) {
    std::error_code ignored;
    std::filesystem::remove(output, ignored);
  }
  // Every set is read and checked before the model is loaded, so a bad path, record or missing
  // field fails at once, naming the key and file:line.
  StatusOr<std::vector<EvalSet>> sets = load_eval_sets(config);
  if (!sets) throw std::runtime_error(sets.status().message());
  StatusOr<Policy> policy = load_policy(config.model, static_cast<uint64_t>(config.trainer.seed));
  if (!policy) throw std::runtime_error(policy.status().message());
  for (const EvalSet& set : *sets) check_prompt_lengths(config, *policy, set);
  ThreadPool reward_pool(scoring_threads(config.reward));

  std::vector<EvalSummary> summaries;
  nlohmann::json datasets = nlohmann::json::array();
  for (const EvalSet& set : *sets) {
    const DatasetResult r = evaluate_dataset(config, *policy, set, reward_pool, comm);
    datasets.push_back(dataset_json(set, r));
    summaries.push_back(r.summary);
  }

  if (comm.rank() == 0) {
    if (const std::filesystem::path parent = std::filesystem::path(output).parent_path(); !parent.empty())
      std::filesystem::create_directories(parent);
    const nlohmann::json results = {
        {"schema", kEvalResultsSchema},
        {"model", config.model.path},
        {"samples_per_problem", config.eval.samples},
        {"temperature", config.eval.temperature},
        {"top_p", config.eval.top_p},
        {"max_new_tokens", config.eval.max_new_tokens > 0 ? config.eval.max_new_tokens : config.rollout.max_new_tokens},
        {"datasets", datasets}};
    if (Status st = write_file_atomic(output, dump_replacing_invalid_utf8(results)); !st.is_ok())
      throw std::runtime_error(st.message());
  }
  return summaries;
}

}  // namespace grpo
