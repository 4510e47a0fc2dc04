// The filters and statistics of rejection sampling: pure functions of a prompt's samples.

#include "trainer/rejection_sampling.h"

#include <algorithm>
#include <set>
#include <stdexcept>

#include <fmt/format.h>

#include "rewards/builtin_rewards.h"

namespace grpo {

const char* sample_verdict_name(SampleVerdict verdict) {
  switch (verdict) {
    case SampleVerdict::kKept: return "kept";
    case SampleVerdict::kTruncated: return "truncated";
    case SampleVerdict::kTooLong: return "too_long";
    case SampleVerdict::kRewardError: return "reward_error";
    case SampleVerdict::kLowReward: return "low_reward";
    case SampleVerdict::kNotCorrect: return "not_correct";
    case SampleVerdict::kBadFormat: return "bad_format";
    case SampleVerdict::kMixedLanguage: return "mixed_language";
    case SampleVerdict::kRepetitive: return "repetitive";
    case SampleVerdict::kDuplicate: return "duplicate";
    case SampleVerdict::kOverCap: return "over_cap";
  }
  return "?";
}

const std::vector<SampleVerdict>& drop_verdicts() {
  static const std::vector<SampleVerdict> all = {
      SampleVerdict::kTruncated,  SampleVerdict::kTooLong,       SampleVerdict::kRewardError,
      SampleVerdict::kLowReward,  SampleVerdict::kNotCorrect,    SampleVerdict::kBadFormat,
      SampleVerdict::kMixedLanguage, SampleVerdict::kRepetitive, SampleVerdict::kDuplicate,
      SampleVerdict::kOverCap};
  return all;
}

double repeated_ngram_share(const std::vector<int64_t>& tokens, int64_t n) {
  const int64_t count = static_cast<int64_t>(tokens.size()) - n + 1;
  if (n < 1 || count <= 0) return 0.0;
  std::set<std::vector<int64_t>> seen;
  int64_t repeated = 0;
  for (int64_t i = 0; i < count; ++i) {
    if (!seen.emplace(tokens.begin() + i, tokens.begin() + i + n).second) ++repeated;
  }
  return static_cast<double>(repeated) / static_cast<double>(count);
}

StatusOr<SampleFilter> SampleFilter::create(const SampleConfig& options, bool has_rewards) {
  if (!has_rewards && options.min_reward)
    return Status::error("sample.min_reward needs reward.functions to score the samples");
  if (!has_rewards && !options.required_components.empty())
    return Status::error("sample.required_components needs reward.functions to score the samples");
  for (const std::string& name : options.required_components) {
    const auto dot = name.find('.');
    if (dot == std::string::npos || dot == 0 || dot + 1 == name.size())
      return Status::error(fmt::format("sample.required_components: '{}' must be label.component, e.g. math.correct",
                                       name));
  }
  if (!options.language.empty()) {
    // The language reward knows which languages it can tell apart; its error names the bad one.
    StatusOr<std::unique_ptr<Reward>> check = make_reward("language", {{"language", options.language}});
    if (!check) return Status::error("sample.language: " + check.status().message());
  }
  SampleFilter filter;
  filter.options_ = options;
  StatusOr<std::unique_ptr<Reward>> format = make_reward("format", {{"mode", "strict"}});
  if (!format) return format.status();
  filter.strict_format_ = std::shared_ptr<const Reward>(std::move(format).value());
  return filter;
}

SampleVerdict SampleFilter::judge(const SampleCandidate& c) const {
  const SampleConfig& o = options_;
  if (o.drop_truncated && c.truncated) return SampleVerdict::kTruncated;
  if (o.max_tokens > 0 && c.tokens > o.max_tokens) return SampleVerdict::kTooLong;
  if (!c.scores.errors.empty()) return SampleVerdict::kRewardError;
  if (o.min_reward && c.scores.total < *o.min_reward) return SampleVerdict::kLowReward;
  for (const std::string& name : o.required_components) {
    const auto it = c.scores.components.find(name);
    if (it == c.scores.components.end()) {
      std::vector<std::string> present;
      for (const auto& entry : c.scores.components) present.push_back(entry.first);
      throw std::runtime_error(fmt::format("sample.required_components: no reward component '{}' (the rewards give: {})",
                                           name, present.empty() ? "none" : fmt::format("{}", fmt::join(present, ", "))));
    }
    if (it->second < 1.0) return SampleVerdict::kNotCorrect;
  }
  if (o.require_format) {
    RewardSample sample;
    sample.completion = c.completion;
    if (strict_format_->score(sample).score < 1.0) return SampleVerdict::kBadFormat;
  }
  if (!o.language.empty()) {
    const double share = language_share(chain_of_thought(c.completion), o.language);
    if (share >= 0 && share < o.min_language_share) return SampleVerdict::kMixedLanguage;  // no words: nothing mixed
  }
  if (o.max_repeated_ngram_share < 1.0 && repeated_ngram_share(c.token_ids, o.ngram_size) > o.max_repeated_ngram_share)
    return SampleVerdict::kRepetitive;
  return SampleVerdict::kKept;
}

std::vector<SampleVerdict> SampleFilter::judge_prompt(const std::vector<SampleCandidate>& candidates) const {
  std::vector<SampleVerdict> verdicts;
  std::set<std::string> kept_texts;
  int64_t kept = 0;
  for (const SampleCandidate& c : candidates) {
    SampleVerdict v = judge(c);
    if (v == SampleVerdict::kKept && options_.deduplicate && kept_texts.count(c.completion)) v = SampleVerdict::kDuplicate;
    if (v == SampleVerdict::kKept && options_.max_kept_per_prompt > 0 && kept >= options_.max_kept_per_prompt)
      v = SampleVerdict::kOverCap;
    if (v == SampleVerdict::kKept) {
      ++kept;
      kept_texts.insert(c.completion);
    }
    verdicts.push_back(v);
  }
  return verdicts;
}

SampleStats::SampleStats() {
  for (SampleVerdict v : drop_verdicts()) dropped[sample_verdict_name(v)] = 0;
}

void SampleStats::add_prompt(const std::vector<SampleCandidate>& candidates, const std::vector<SampleVerdict>& verdicts) {
  if (candidates.size() != verdicts.size()) throw std::logic_error("SampleStats::add_prompt: one verdict per candidate");
  ++prompts;
  bool any_kept = false;
  for (size_t i = 0; i < candidates.size(); ++i) {
    ++generated;
    reward_sum += candidates[i].scores.total;
    if (verdicts[i] == SampleVerdict::kKept) {
      ++kept;
      any_kept = true;
      kept_reward_sum += candidates[i].scores.total;
      kept_tokens += candidates[i].tokens;
    } else {
      ++dropped[sample_verdict_name(verdicts[i])];
    }
  }
  if (any_kept) ++prompts_with_kept;
}

void SampleStats::merge(const SampleStats& other) {
  prompts += other.prompts;
  prompts_with_kept += other.prompts_with_kept;
  generated += other.generated;
  kept += other.kept;
  for (const auto& [reason, count] : other.dropped) dropped[reason] += count;
  reward_sum += other.reward_sum;
  kept_reward_sum += other.kept_reward_sum;
  kept_tokens += other.kept_tokens;
}

nlohmann::json SampleStats::to_json() const {
  int64_t dropped_total = 0;
  for (const auto& entry : dropped) dropped_total += entry.second;
  const auto mean = [](double sum, int64_t n) { return n > 0 ? sum / static_cast<double>(n) : 0.0; };
  return {{"prompts", prompts},
          {"prompts_with_kept", prompts_with_kept},
          {"generated", generated},
          {"kept", kept},
          {"dropped_total", dropped_total},
          {"dropped", dropped},
          {"reward_sum", reward_sum},
          {"kept_reward_sum", kept_reward_sum},
          {"kept_tokens", kept_tokens},
          {"mean_reward", mean(reward_sum, generated)},
          {"mean_kept_reward", mean(kept_reward_sum, kept)},
          {"mean_kept_tokens", mean(static_cast<double>(kept_tokens), kept)}};
}

SampleStats SampleStats::from_json(const nlohmann::json& json) {
  SampleStats s;
  s.prompts = json.at("prompts").get<int64_t>();
  s.prompts_with_kept = json.at("prompts_with_kept").get<int64_t>();
  s.generated = json.at("generated").get<int64_t>();
  s.kept = json.at("kept").get<int64_t>();
  for (const auto& [reason, count] : json.at("dropped").items()) s.dropped[reason] = count.get<int64_t>();
  s.reward_sum = json.at("reward_sum").get<double>();
  s.kept_reward_sum = json.at("kept_reward_sum").get<double>();
  s.kept_tokens = json.at("kept_tokens").get<int64_t>();
  return s;
}

std::string SampleStats::table() const {
  const auto share = [this](int64_t n) {
    return generated > 0 ? 100.0 * static_cast<double>(n) / static_cast<double>(generated) : 0.0;
  };
  std::string text = fmt::format("{:<24} {:>9} {:>7}\n", "samples", "count", "share");
  text += fmt::format("{:<24} {:>9} {:>6.1f}%\n", "generated", generated, 100.0 * (generated > 0));
  text += fmt::format("{:<24} {:>9} {:>6.1f}%\n", "kept", kept, share(kept));
  for (SampleVerdict v : drop_verdicts()) {
    const auto it = dropped.find(sample_verdict_name(v));
    const int64_t n = it == dropped.end() ? 0 : it->second;
    text += fmt::format("{:<24} {:>9} {:>6.1f}%\n", fmt::format("dropped: {}", sample_verdict_name(v)), n, share(n));
  }
  text += fmt::format("{} prompts, {} with a kept sample", prompts, prompts_with_kept);
  return text;
}

std::string sample_settings(const Config& config) {
  // Only what a part's contents depend on: where the output goes, threads and logging do not.
  Config settings;
  settings.model = config.model;
  settings.data = config.data;
  settings.data.train_path = config.sample.dataset.empty() ? config.data.train_path : config.sample.dataset;
  settings.data.eval_path.clear();
  settings.data.shuffle = true;
  settings.rollout = config.rollout;
  settings.reward = config.reward;
  settings.reward.threads = 0;
  settings.trainer.seed = config.trainer.seed;
  settings.sample = config.sample;
  settings.sample.output.clear();
  return config_to_yaml(settings);
}

std::string sample_output_path(const Config& config) {
  return config.sample.output.empty() ? config.trainer.run_dir + "/samples.jsonl" : config.sample.output;
}
std::string sample_stats_path(const Config& config) { return config.trainer.run_dir + "/sample_stats.json"; }
std::string sample_parts_dir(const Config& config) { return config.trainer.run_dir + "/sample_parts"; }

}  // namespace grpo
