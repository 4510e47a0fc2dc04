// The driver of `grpo sample`: parts of the prompt set are sampled on the ranks, scored, filtered
// and written one by one; rank 0 merges them in prompt order at the end.

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <optional>
#include <thread>

#include <ATen/Parallel.h>
#include <fmt/format.h>

#include "core/atomic_file.h"
#include "core/logging.h"
#include "core/thread_pool.h"
#include "dist/communicator.h"
#include "rollout/engine.h"
#include "trainer/data.h"
#include "trainer/policy.h"
#include "trainer/rejection_sampling.h"

namespace grpo {
namespace {

// A model's text is not always valid UTF-8 (a byte-level tokenizer can stop mid-character).
std::string to_text(const nlohmann::json& json) {
  return json.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::string part_path(const Config& config, int64_t part) {
  return fmt::format("{}/part-{:06d}.json", sample_parts_dir(config), part);
}

// A part file written by this run's settings for prompts [begin, end); anything else is redone.
std::optional<nlohmann::json> read_part(const std::string& path, int64_t part, int64_t begin, int64_t end) {
  if (!std::filesystem::exists(path)) return std::nullopt;
  StatusOr<std::string> text = read_file(path);
  if (!text) return std::nullopt;
  try {
    nlohmann::json json = nlohmann::json::parse(*text);
    if (json.at("part").get<int64_t>() != part || json.at("first_prompt").get<int64_t>() != begin ||
        json.at("end_prompt").get<int64_t>() != end)
      return std::nullopt;
    return json;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

struct SamplingContext {
  const Config& config;
  Policy& policy;
  const std::vector<Example>& prompts;
  const std::optional<RewardSet>& rewards;
  const SampleFilter& filter;
  ThreadPool& reward_pool;
  GenerationOptions generation;
};

// Samples, scores and filters prompts [begin, end) and returns the part file's contents.
nlohmann::json sample_part(const SamplingContext& ctx, int64_t part, int64_t begin, int64_t end) {
  const Config& config = ctx.config;
  const int64_t k = config.sample.samples_per_prompt;
  std::vector<std::vector<int64_t>> prompt_ids;
  std::vector<uint64_t> keys;
  for (int64_t i = begin; i < end; ++i) {
    prompt_ids.push_back(encode_prompt(ctx.policy, ctx.prompts[static_cast<size_t>(i)].prompt));
    keys.push_back(static_cast<uint64_t>(i));  // the prompt's place in the set: the same on any rank count
  }
  const std::vector<uint64_t> seeds = rollout_seeds(static_cast<uint64_t>(config.trainer.seed), keys, k);
  const RolloutBatch batch = generate(ctx.policy.model, prompt_ids, ctx.generation, seeds, &*ctx.policy.tokenizer);

  std::vector<SampleCandidate> candidates;
  std::vector<RewardSample> reward_samples;
  for (int64_t row = 0; row < (end - begin) * k; ++row) {
    const Example& e = ctx.prompts[static_cast<size_t>(begin + row / k)];
    SampleCandidate c;
    c.token_ids = completion_tokens(batch, row);
    c.tokens = static_cast<int64_t>(c.token_ids.size());
    c.completion = ctx.policy.tokenizer->decode(c.token_ids, true);
    c.truncated = batch.finish_reasons[static_cast<size_t>(row)] == FinishReason::kLength;
    RewardSample s;
    s.id = fmt::format("{}#{}", e.id, row % k);
    s.prompt = e.prompt;
    s.completion = c.completion;
    s.fields = e.fields;
    s.completion_tokens = c.tokens;
    reward_samples.push_back(std::move(s));
    candidates.push_back(std::move(c));
  }
  if (ctx.rewards) {
    const std::vector<SampleScores> scores = ctx.rewards->score(reward_samples, config.reward, ctx.reward_pool);
    for (size_t i = 0; i < scores.size(); ++i) candidates[i].scores = scores[i];
  }

  SampleStats stats;
  nlohmann::json records = nlohmann::json::array();
  for (int64_t p = 0; p < end - begin; ++p) {
    const std::vector<SampleCandidate> group(candidates.begin() + p * k, candidates.begin() + (p + 1) * k);
    const std::vector<SampleVerdict> verdicts = ctx.filter.judge_prompt(group);
    stats.add_prompt(group, verdicts);
    const Example& e = ctx.prompts[static_cast<size_t>(begin + p)];
    for (int64_t j = 0; j < k; ++j) {
      if (verdicts[static_cast<size_t>(j)] != SampleVerdict::kKept) continue;
      const SampleCandidate& c = group[static_cast<size_t>(j)];
      const int64_t row = p * k + j;
      nlohmann::json record = {{"id", fmt::format("{}#{}", e.id, j)}, {"prompt", e.prompt}, {"response", c.completion}};
      if (e.fields.contains("answer")) record["answer"] = e.answer;
      record["provenance"] = {{"prompt_id", e.id},
                              {"prompt_index", begin + p},
                              {"sample_index", j},
                              {"checkpoint", config.model.path},
                              {"seed", config.trainer.seed},
                              {"sample_seed", seeds[static_cast<size_t>(row)]},
                              {"total_reward", c.scores.total},
                              {"rewards", c.scores.rewards},
                              {"components", c.scores.components},
                              {"completion_tokens", c.tokens},
                              {"finish_reason", finish_reason_name(batch.finish_reasons[static_cast<size_t>(row)])}};
      records.push_back(std::move(record));
    }
  }
  return {{"part", part}, {"first_prompt", begin}, {"end_prompt", end}, {"stats", stats.to_json()},
          {"records", std::move(records)}};
}

// The prompts to sample: sample.dataset (or data.train_path), checked like a training set.
std::vector<Example> load_prompts(const Config& config, const Policy& policy, const std::optional<RewardSet>& rewards) {
  const bool own = !config.sample.dataset.empty();
  const std::string key = own ? "sample.dataset" : "data.train_path";
  const std::string source = own ? config.sample.dataset : config.data.train_path;
  if (source.empty()) throw std::runtime_error("nothing to sample: set sample.dataset or data.train_path");
  StatusOr<Dataset> data = load_dataset(source, config.data);
  if (!data) throw std::runtime_error(key + ": " + data.status().message());
  ExampleChecks checks;
  if (rewards) checks.missing_field = [&rewards](const nlohmann::json& fields) { return rewards->missing_field(fields); };
  checks.prompt_tokens = [&policy](const std::string& prompt) {
    return static_cast<int64_t>(encode_prompt(policy, prompt).size());
  };
  checks.context_length = policy.model->options().max_position_embeddings;
  checks.max_new_tokens = config.rollout.max_new_tokens;
  checks.overlong = config.data.overlong_prompts;
  StatusOr<int64_t> dropped = check_examples(*data, checks, config.data);
  if (!dropped) throw std::runtime_error(key + ": " + dropped.status().message());
  if (*dropped > 0) log_warn("skipped {} prompts of {} too long for the model's context (data.overlong_prompts: skip)",
                             *dropped, source);
  if (data->skipped_lines > 0) log_warn("skipped {} malformed lines of {}", data->skipped_lines, source);
  std::vector<Example> prompts = std::move(data->examples);
  if (config.sample.max_prompts > 0 && static_cast<int64_t>(prompts.size()) > config.sample.max_prompts)
    prompts.resize(static_cast<size_t>(config.sample.max_prompts));
  if (prompts.empty()) throw std::runtime_error(key + ": " + source + " has no prompts");
  return prompts;
}

// Rank 0: every part, in order, into the output JSONL; their statistics summed.
SampleStats merge_parts(const Config& config, int64_t parts, int64_t total, int64_t per_part) {
  const std::string output = sample_output_path(config);
  if (const auto parent = std::filesystem::path(output).parent_path(); !parent.empty())
    std::filesystem::create_directories(parent);
  AtomicFileWriter writer(output);
  SampleStats stats;
  for (int64_t part = 0; part < parts; ++part) {
    const int64_t begin = part * per_part, end = std::min(total, begin + per_part);
    const std::optional<nlohmann::json> json = read_part(part_path(config, part), part, begin, end);
    if (!json)
      throw std::runtime_error(fmt::format("{} is missing, unreadable or not part {} (prompts {} to {}); delete it "
                                           "and run again to sample it anew",
                                           part_path(config, part), part, begin, end - 1));
    stats.merge(SampleStats::from_json(json->at("stats")));
    for (const nlohmann::json& record : json->at("records")) {
      const std::string line = to_text(record) + "\n";
      writer.write(line.data(), line.size());
    }
  }
  if (Status s = writer.commit(); !s.is_ok()) throw std::runtime_error(s.message());
  const nlohmann::json summary = {{"checkpoint", config.model.path},
                                  {"dataset", config.sample.dataset.empty() ? config.data.train_path : config.sample.dataset},
                                  {"samples_per_prompt", config.sample.samples_per_prompt},
                                  {"seed", config.trainer.seed},
                                  {"output", output},
                                  {"stats", stats.to_json()}};
  if (Status s = write_file_atomic(sample_stats_path(config), summary.dump(2) + "\n"); !s.is_ok())
    throw std::runtime_error(s.message());
  return stats;
}

}  // namespace

SampleSummary run_rejection_sampling(const Config& config) {
  Communicator& comm = world();
  configure_logging(comm.rank(), LogSettings{config.logging.level, config.logging.all_ranks});
  at::set_num_threads(config.trainer.threads > 0
                          ? static_cast<int>(config.trainer.threads)
                          : std::max(1, static_cast<int>(std::thread::hardware_concurrency()) / local_size()));
  const auto started = std::chrono::steady_clock::now();

  std::optional<RewardSet> rewards;
  if (!config.reward.functions.empty()) {
    StatusOr<RewardSet> created = RewardSet::create(config.reward.functions);
    if (!created) throw std::runtime_error(created.status().message());
    rewards = std::move(created).value();
  }
  StatusOr<SampleFilter> filter = SampleFilter::create(config.sample, rewards.has_value());
  if (!filter) throw std::runtime_error(filter.status().message());
  StatusOr<Policy> policy = load_policy(config.model, static_cast<uint64_t>(config.trainer.seed));
  if (!policy) throw std::runtime_error(policy.status().message());
  const std::vector<Example> prompts = load_prompts(config, *policy, rewards);

  const int64_t total = static_cast<int64_t>(prompts.size()), per_part = config.sample.prompts_per_part;
  const int64_t parts = (total + per_part - 1) / per_part;
  // Parts are written atomically, so one that exists is whole; merge_parts checks each again.
  std::vector<int64_t> pending;
  for (int64_t part = 0; part < parts; ++part)
    if (!std::filesystem::exists(part_path(config, part))) pending.push_back(part);
  // Every rank has listed the same finished parts before any rank writes a new one.
  comm.barrier();
  if (comm.rank() == 0)
    log_info("sampling {} prompts x {} from {}: {} parts of {} prompts, {} written by an earlier attempt", total,
             config.sample.samples_per_prompt, config.model.path, parts, per_part,
             parts - static_cast<int64_t>(pending.size()));

  ThreadPool reward_pool(scoring_threads(config.reward));
  const SamplingContext ctx{config, *policy, prompts, rewards, *filter, reward_pool,
                            generation_options(config.rollout, *policy, config.sample.samples_per_prompt)};
  std::filesystem::create_directories(sample_parts_dir(config));
  // Pending parts are dealt round-robin, so a resumed run spreads what is left over every rank.
  for (size_t i = static_cast<size_t>(comm.rank()); i < pending.size(); i += static_cast<size_t>(comm.size())) {
    const int64_t part = pending[i];
    const int64_t begin = part * per_part, end = std::min(total, begin + per_part);
    const auto part_started = std::chrono::steady_clock::now();
    const nlohmann::json contents = sample_part(ctx, part, begin, end);
    if (Status s = write_file_atomic(part_path(config, part), to_text(contents) + "\n"); !s.is_ok())
      throw std::runtime_error(s.message());
    const SampleStats stats = SampleStats::from_json(contents.at("stats"));
    log_info("part {}/{} (prompts {}-{}): kept {} of {} in {:.1f} s", part + 1, parts, begin, end - 1, stats.kept,
             stats.generated,
             std::chrono::duration<double>(std::chrono::steady_clock::now() - part_started).count());
  }
  // Ranks finish at different times (and a resumed run's parts are uneven): waiting here is not a
  // hang, so the collective deadline does not apply. A rank that fails aborts the job instead.
  set_collective_timeout(0);
  comm.barrier();
  set_collective_timeout(config.trainer.collective_timeout_s);

  SampleSummary summary;
  summary.parts = parts;
  summary.parts_resumed = parts - static_cast<int64_t>(pending.size());
  if (comm.rank() == 0) summary.stats = merge_parts(config, parts, total, per_part);
  comm.barrier();
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  return summary;
}

}  // namespace grpo
