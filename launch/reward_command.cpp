// `grpo reward`: offline scoring of completions with the configured reward functions.

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "core/jsonl.h"
#include "core/logging.h"
#include "launch/commands.h"
#include "rewards/reward_set.h"

namespace grpo {

const char* const kRewardUsage =
    "grpo reward --config FILE --input completions.jsonl --output scored.jsonl [key.path=value ...]\n\n"
    "Scores each input line with the config's reward.functions. An input line is a JSON object\n"
    "with \"completion\" (required), \"id\", \"prompt\", \"completion_tokens\" (optional); every other\n"
    "field (gold answer, tests, language, ...) is passed to the rewards. Each output line is the\n"
    "input plus \"reward\" (the weighted total), \"rewards\", \"components\", \"reasons\" and\n"
    "\"errors\". A malformed input line is an error naming its line number.";

int run_reward(const Arguments& args, const Config& config) {
  const std::string input = args.required("--input");
  const std::string output = args.required("--output");
  StatusOr<RewardSet> rewards = RewardSet::create(config.reward.functions);
  if (!rewards) throw UsageError(rewards.status().message());
  StatusOr<JsonlRecords> records = read_jsonl(input);
  if (!records) throw UsageError(records.status().message());

  std::vector<RewardSample> samples;
  for (size_t i = 0; i < records->records.size(); ++i) {
    const nlohmann::json& r = records->records[i];
    const std::string where = fmt::format("{}:{}", input, records->line_numbers[i]);
    if (!r.is_object() || !r.contains("completion") || !r["completion"].is_string())
      throw UsageError(fmt::format("{}: expected an object with a string \"completion\"", where));
    RewardSample sample;
    sample.id = r.contains("id") ? (r["id"].is_string() ? r["id"].get<std::string>() : r["id"].dump())
                                 : fmt::format("line-{}", records->line_numbers[i]);
    sample.prompt = r.value("prompt", "");
    sample.completion = r["completion"];
    if (r.contains("completion_tokens")) {
      if (!r["completion_tokens"].is_number_integer()) throw UsageError(fmt::format("{}: completion_tokens must be an integer", where));
      sample.completion_tokens = r["completion_tokens"];
    }
    sample.fields = r;
    if (r.contains("fields") && r["fields"].is_object()) sample.fields.update(r["fields"]);
    samples.push_back(std::move(sample));
  }

  ThreadPool pool(scoring_threads(config.reward));
  ScoringStats stats;
  const std::vector<SampleScores> scores = rewards->score(samples, config.reward, pool, &stats);

  AtomicFileWriter writer(output);
  std::map<std::string, double> sums;
  double total = 0;
  for (size_t i = 0; i < samples.size(); ++i) {
    nlohmann::json out = records->records[i];
    out["reward"] = scores[i].total;
    out["rewards"] = scores[i].rewards;
    out["components"] = scores[i].components;
    out["reasons"] = scores[i].reasons;
    out["errors"] = scores[i].errors;
    const std::string line = out.dump() + "\n";
    writer.write(line.data(), line.size());
    total += scores[i].total;
    for (const auto& [label, value] : scores[i].rewards) sums[label] += value;
  }
  if (Status s = writer.commit(); !s.is_ok()) throw std::runtime_error(s.message());

  const double n = std::max<double>(1.0, static_cast<double>(samples.size()));
  std::string per_reward;
  for (const auto& [label, sum] : sums) per_reward += fmt::format(" {} {:.3f}", label, sum / n);
  fmt::print("scored {} samples: mean reward {:.4f} ({} ), {} reward errors, {} timeouts -> {}\n", samples.size(),
             total / n, per_reward, stats.errors, stats.timeouts, output);
  if (stats.errors > 0) log_warn("{} reward evaluations failed and scored {}; see \"errors\" in {}", stats.errors,
                                 config.reward.error_score, output);
  return 0;
}

}  // namespace grpo
