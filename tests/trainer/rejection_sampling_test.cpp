// The filters of `grpo sample` on hand-made samples: each drop reason, the order the filters run
// in, duplicates and the per-prompt cap, and the counts they add up to.

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/config.h"
#include "trainer/rejection_sampling.h"

namespace grpo {
namespace {

// A well-formed, correct, English, unrepetitive sample: every filter passes it.
SampleCandidate good(const std::string& answer = "7") {
  SampleCandidate c;
  c.completion = "<think>we add three and four</think><answer>" + answer + "</answer>";
  c.token_ids = {1, 2, 3, 4, 5, 6, 7, 8};
  c.tokens = static_cast<int64_t>(c.token_ids.size());
  c.scores.total = 1.1;
  c.scores.rewards = {{"math", 1.0}, {"format", 1.0}};
  c.scores.components = {{"math.correct", 1.0}, {"format.think", 1.0}};
  return c;
}

SampleFilter make_filter(const SampleConfig& options, bool has_rewards = true) {
  StatusOr<SampleFilter> filter = SampleFilter::create(options, has_rewards);
  EXPECT_TRUE(filter) << filter.status().message();
  return std::move(filter).value();
}

TEST(SampleFilter, DefaultsKeepAGoodSample) {
  EXPECT_EQ(make_filter(SampleConfig{}).judge(good()), SampleVerdict::kKept);
}

TEST(SampleFilter, TruncatedSamplesAreDroppedUnlessAllowed) {
  SampleCandidate c = good();
  c.truncated = true;
  SampleConfig options;
  EXPECT_EQ(make_filter(options).judge(c), SampleVerdict::kTruncated);
  options.drop_truncated = false;
  EXPECT_EQ(make_filter(options).judge(c), SampleVerdict::kKept);
}

TEST(SampleFilter, MaxTokensDropsLongerSamplesOnly) {
  SampleConfig options;
  options.max_tokens = 8;
  SampleCandidate c = good();
  EXPECT_EQ(make_filter(options).judge(c), SampleVerdict::kKept);  // exactly 8 tokens
  c.tokens = 9;
  EXPECT_EQ(make_filter(options).judge(c), SampleVerdict::kTooLong);
}

TEST(SampleFilter, AFailedRewardDropsTheSample) {
  SampleCandidate c = good();
  c.scores.errors = {"math: timed out"};
  EXPECT_EQ(make_filter(SampleConfig{}).judge(c), SampleVerdict::kRewardError);
}

TEST(SampleFilter, MinRewardIsInclusive) {
  SampleConfig options;
  options.min_reward = 1.1;
  SampleCandidate c = good();
  EXPECT_EQ(make_filter(options).judge(c), SampleVerdict::kKept);
  c.scores.total = 1.0999;
  EXPECT_EQ(make_filter(options).judge(c), SampleVerdict::kLowReward);
}

TEST(SampleFilter, RequiredComponentsMustBeOne) {
  SampleConfig options;
  options.required_components = {"math.correct"};
  SampleCandidate c = good();
  EXPECT_EQ(make_filter(options).judge(c), SampleVerdict::kKept);
  c.scores.components["math.correct"] = 0.0;
  EXPECT_EQ(make_filter(options).judge(c), SampleVerdict::kNotCorrect);
}

TEST(SampleFilter, AnUnknownRequiredComponentIsAnErrorNamingTheKey) {
  SampleConfig options;
  options.required_components = {"math.corect"};
  try {
    make_filter(options).judge(good());
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("sample.required_components"), std::string::npos) << message;
    EXPECT_NE(message.find("math.correct"), std::string::npos) << message;  // what the rewards do give
  }
}

TEST(SampleFilter, FormatIsTheStrictR1Format) {
  SampleConfig options;
  options.require_format = true;
  SampleCandidate c = good();
  EXPECT_EQ(make_filter(options).judge(c), SampleVerdict::kKept);
  c.completion = "The answer is 7.";
  EXPECT_EQ(make_filter(options).judge(c), SampleVerdict::kBadFormat);
  c.completion = good().completion + " and more";
  EXPECT_EQ(make_filter(options).judge(c), SampleVerdict::kBadFormat);
}

TEST(SampleFilter, LanguageShareOfTheChainOfThought) {
  SampleConfig options;
  options.language = "en";
  options.min_language_share = 0.9;
  SampleCandidate c = good();
  EXPECT_EQ(make_filter(options).judge(c), SampleVerdict::kKept);
  // 4 English words and 6 Han characters (a word each): 40% English.
  c.completion = "<think>we add the digits \xe8\xbf\x9b\xe4\xbd\x8d\xe8\xbf\x9b\xe4\xbd\x8d\xe8\xbf\x9b\xe4\xbd\x8d"
                 "</think><answer>7</answer>";
  EXPECT_EQ(make_filter(options).judge(c), SampleVerdict::kMixedLanguage);
  options.min_language_share = 0.4;
  EXPECT_EQ(make_filter(options).judge(c), SampleVerdict::kKept);
  // Arithmetic alone has no words, so nothing in it is mixed.
  c.completion = "<think>3+4+0=7</think><answer>7</answer>";
  options.min_language_share = 1.0;
  EXPECT_EQ(make_filter(options).judge(c), SampleVerdict::kKept);
}

TEST(SampleFilter, RepeatedNgramShare) {
  // n = 2 over 1 2 1 2 1 2 1 2: seven bigrams, the first two new, five repeats.
  EXPECT_DOUBLE_EQ(repeated_ngram_share({1, 2, 1, 2, 1, 2, 1, 2}, 2), 5.0 / 7.0);
  EXPECT_DOUBLE_EQ(repeated_ngram_share({1, 2, 3, 4, 5}, 2), 0.0);
  EXPECT_DOUBLE_EQ(repeated_ngram_share({9, 9, 9, 9}, 1), 3.0 / 4.0);
  EXPECT_DOUBLE_EQ(repeated_ngram_share({1, 2}, 3), 0.0);  // shorter than n

  SampleConfig options;
  options.ngram_size = 2;
  options.max_repeated_ngram_share = 0.5;
  SampleCandidate c = good();
  EXPECT_EQ(make_filter(options).judge(c), SampleVerdict::kKept);
  c.token_ids = {1, 2, 1, 2, 1, 2, 1, 2};
  EXPECT_EQ(make_filter(options).judge(c), SampleVerdict::kRepetitive);
}

TEST(SampleFilter, TheFirstFailingFilterNamesTheDrop) {
  SampleConfig options;
  options.min_reward = 1.0;
  options.require_format = true;
  SampleCandidate c = good();
  c.truncated = true;
  c.scores.total = 0.0;
  c.completion = "no tags";
  EXPECT_EQ(make_filter(options).judge(c), SampleVerdict::kTruncated);
  c.truncated = false;
  EXPECT_EQ(make_filter(options).judge(c), SampleVerdict::kLowReward);
}

TEST(SampleFilter, DuplicatesOfAKeptSampleAreDropped) {
  SampleConfig options;
  const std::vector<SampleCandidate> group = {good("7"), good("7"), good("8"), good("7")};
  EXPECT_EQ(make_filter(options).judge_prompt(group),
            (std::vector<SampleVerdict>{SampleVerdict::kKept, SampleVerdict::kDuplicate, SampleVerdict::kKept,
                                        SampleVerdict::kDuplicate}));
  options.deduplicate = false;
  EXPECT_EQ(make_filter(options).judge_prompt(group), std::vector<SampleVerdict>(4, SampleVerdict::kKept));
}

TEST(SampleFilter, TheCapCountsOnlyKeptSamples) {
  SampleConfig options;
  options.max_kept_per_prompt = 2;
  options.min_reward = 1.0;
  std::vector<SampleCandidate> group = {good("1"), good("2"), good("3"), good("4")};
  group[0].scores.total = 0.0;
  EXPECT_EQ(make_filter(options).judge_prompt(group),
            (std::vector<SampleVerdict>{SampleVerdict::kLowReward, SampleVerdict::kKept, SampleVerdict::kKept,
                                        SampleVerdict::kOverCap}));
}

TEST(SampleFilter, OptionsThatCannotWorkAreRefused) {
  SampleConfig options;
  options.min_reward = 0.5;
  StatusOr<SampleFilter> no_rewards = SampleFilter::create(options, /*has_rewards=*/false);
  ASSERT_FALSE(no_rewards);
  EXPECT_NE(no_rewards.status().message().find("sample.min_reward"), std::string::npos);

  SampleConfig component;
  component.required_components = {"correct"};
  StatusOr<SampleFilter> bad_name = SampleFilter::create(component, true);
  ASSERT_FALSE(bad_name);
  EXPECT_NE(bad_name.status().message().find("label.component"), std::string::npos);

  SampleConfig language;
  language.language = "klingon";
  StatusOr<SampleFilter> bad_language = SampleFilter::create(language, true);
  ASSERT_FALSE(bad_language);
  EXPECT_NE(bad_language.status().message().find("sample.language"), std::string::npos);
}

TEST(SampleStats, CountsAddUpAndSurviveJson) {
  SampleConfig options;
  options.max_kept_per_prompt = 1;
  options.min_reward = 1.0;
  std::vector<SampleCandidate> group = {good("1"), good("1"), good("2")};
  group[1].scores.total = 0.5;
  const SampleFilter filter = make_filter(options);
  SampleStats stats;
  stats.add_prompt(group, filter.judge_prompt(group));  // kept, low_reward, over_cap
  std::vector<SampleCandidate> none = {good("3")};
  none[0].truncated = true;
  stats.add_prompt(none, filter.judge_prompt(none));

  EXPECT_EQ(stats.prompts, 2);
  EXPECT_EQ(stats.prompts_with_kept, 1);
  EXPECT_EQ(stats.generated, 4);
  EXPECT_EQ(stats.kept, 1);
  EXPECT_EQ(stats.dropped.at("low_reward"), 1);
  EXPECT_EQ(stats.dropped.at("over_cap"), 1);
  EXPECT_EQ(stats.dropped.at("truncated"), 1);
  EXPECT_EQ(stats.dropped.at("duplicate"), 0);  // every reason is listed
  EXPECT_EQ(stats.dropped.size(), drop_verdicts().size());
  EXPECT_DOUBLE_EQ(stats.reward_sum, 1.1 + 0.5 + 1.1 + 1.1);
  EXPECT_DOUBLE_EQ(stats.kept_reward_sum, 1.1);

  const nlohmann::json json = stats.to_json();
  EXPECT_EQ(json.at("dropped_total").get<int64_t>() + json.at("kept").get<int64_t>(), json.at("generated").get<int64_t>());
  SampleStats twice = SampleStats::from_json(json);
  twice.merge(stats);
  EXPECT_EQ(twice.generated, 8);
  EXPECT_EQ(twice.dropped.at("over_cap"), 2);
  EXPECT_EQ(twice.to_json().at("mean_kept_reward").get<double>(), 1.1);
  EXPECT_NE(stats.table().find("dropped: low_reward"), std::string::npos);
}

TEST(SampleSettings, ChangeWithWhatThePartsDependOnOnly) {
  StatusOr<Config> base = parse_config("model: {path: \"builtin:demo-qwen2\"}\n"
                                       "sample: {samples_per_prompt: 4, min_reward: 1.0, "
                                       "required_components: [math.correct]}\n",
                                       "test.yaml");
  ASSERT_TRUE(base) << base.status().message();
  EXPECT_EQ(base->sample.required_components, std::vector<std::string>{"math.correct"});
  ASSERT_TRUE(base->sample.min_reward);
  Config moved = *base;
  moved.trainer.run_dir = "elsewhere";
  moved.sample.output = "elsewhere/out.jsonl";
  moved.trainer.threads = 7;
  EXPECT_EQ(sample_settings(*base), sample_settings(moved));
  for (auto change : std::vector<void (*)(Config&)>{
           [](Config& c) { c.sample.samples_per_prompt = 5; }, [](Config& c) { c.trainer.seed = 1; },
           [](Config& c) { c.model.path = "other"; }, [](Config& c) { c.rollout.temperature = 0.5; },
           [](Config& c) { c.sample.max_kept_per_prompt = 1; }, [](Config& c) { c.sample.dataset = "x.jsonl"; }}) {
    Config changed = *base;
    change(changed);
    EXPECT_NE(sample_settings(*base), sample_settings(changed));
  }
  StatusOr<Config> bad = parse_config("sample: {samples_per_prompt: 0}\n", "bad.yaml");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.status().message().find("bad.yaml:1: sample.samples_per_prompt"), std::string::npos)
      << bad.status().message();
}

}  // namespace
}  // namespace grpo
