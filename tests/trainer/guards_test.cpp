// Load-time input checks (empty prompts, fields the rewards need, prompts too long for the model's
// context) and the run guards that stop a GRPO run which cannot learn.

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "rewards/reward_set.h"
#include "trainer/data.h"
#include "trainer/guards.h"

namespace grpo {
namespace {

namespace fs = std::filesystem;

const fs::path kWork = fs::temp_directory_path() / ("grpo_guards_" + std::to_string(::getpid()));

class RemoveWorkDirectory : public ::testing::Environment {
  void TearDown() override { fs::remove_all(kWork); }
};
const auto* const kCleanUp = ::testing::AddGlobalTestEnvironment(new RemoveWorkDirectory);

std::string write_jsonl(const std::string& name, const std::string& contents) {
  const fs::path dir = kWork;
  fs::create_directories(dir);
  const std::string path = (dir / name).string();
  std::ofstream(path) << contents;
  return path;
}

TEST(InputChecks, NullEmptyOrNonStringPromptsAreRejectedAtLoadWithFileAndLine) {
  const std::string path = write_jsonl("prompts.jsonl",
                                       "{\"prompt\": \"1+1=\", \"answer\": \"2\"}\n"
                                       "{\"prompt\": null, \"answer\": \"3\"}\n"
                                       "{\"prompt\": \"  \", \"answer\": \"4\"}\n"
                                       "{\"prompt\": 7, \"answer\": \"5\"}\n"
                                       "{\"prompt\": \"2+2=\", \"answer\": \"4\"}\n");
  DataConfig mapping;
  StatusOr<Dataset> strict = load_dataset(path, mapping);
  ASSERT_FALSE(strict.is_ok());
  EXPECT_EQ(strict.status().message(),
            path + ":2: field 'prompt' (data.prompt_field) must be a non-empty string, got null");
  mapping.skip_malformed = true;
  StatusOr<Dataset> lenient = load_dataset(path, mapping);
  ASSERT_TRUE(lenient.is_ok()) << lenient.status().message();
  ASSERT_EQ(lenient->examples.size(), 2u);  // lines 2, 3 and 4 are skipped and counted
  EXPECT_EQ(lenient->skipped_lines, 3);
  EXPECT_EQ(lenient->examples[1].source, path + ":5");
}

// The fields check as the trainer runs it: the configured rewards say what each example lacks.
ExampleChecks field_checks(const RewardSet& rewards) {
  ExampleChecks checks;
  checks.missing_field = [&rewards](const nlohmann::json& fields) { return rewards.missing_field(fields); };
  return checks;
}

TEST(InputChecks, AMissingGoldAnswerIsOneErrorNamingFileLineRewardAndField) {
  const std::string path = write_jsonl("gold.jsonl",
                                       "{\"question\": \"1+1=\", \"gold\": \"2\"}\n"
                                       "{\"question\": \"2+2=\", \"gold\": \"4\"}\n"
                                       "{\"question\": \"3+3=\"}\n"
                                       "{\"question\": \"4+4=\", \"gold\": null}\n");
  DataConfig mapping;
  mapping.prompt_field = "question";
  mapping.answer_field = "gold";
  StatusOr<RewardSet> rewards = RewardSet::create({{"format", "", 1.0, {}}, {"math", "", 1.0, {}}});
  ASSERT_TRUE(rewards.is_ok()) << rewards.status().message();
  StatusOr<Dataset> data = load_dataset(path, mapping);
  ASSERT_TRUE(data.is_ok()) << data.status().message();
  StatusOr<int64_t> checked = check_examples(*data, field_checks(*rewards), mapping);
  ASSERT_FALSE(checked.is_ok());
  EXPECT_EQ(checked.status().message(),
            path + ":3: reward 'math' needs field 'gold' (data.answer_field), which is missing, null or empty");

  // A reward that needs no dataset field passes the same file.
  StatusOr<RewardSet> format_only = RewardSet::create({{"format", "", 1.0, {}}});
  ASSERT_TRUE(format_only.is_ok());
  StatusOr<Dataset> again = load_dataset(path, mapping);
  ASSERT_TRUE(again.is_ok());
  EXPECT_TRUE(check_examples(*again, field_checks(*format_only), mapping).is_ok());

  // The language reward needs its field only when no fixed language is configured.
  StatusOr<RewardSet> language = RewardSet::create({{"language", "", 1.0, {}}});
  ASSERT_TRUE(language.is_ok());
  EXPECT_EQ(language->missing_field({{"answer", "2"}}), std::make_pair(std::string("language"), std::string("language")));
  EXPECT_EQ(language->missing_field({{"language", "en"}}).second, "");
}

TEST(InputChecks, PromptsBeyondTheContextAreAnErrorOrSkippedAndCounted) {
  const std::string path = write_jsonl("long.jsonl",
                                       "{\"prompt\": \"short\"}\n"
                                       "{\"prompt\": \"" + std::string(40, 'x') + "\"}\n"
                                       "{\"prompt\": \"" + std::string(32, 'y') + "\"}\n");
  DataConfig mapping;
  ExampleChecks checks;
  checks.prompt_tokens = [](const std::string& prompt) { return static_cast<int64_t>(prompt.size()); };  // bytes
  checks.context_length = 64;
  checks.max_new_tokens = 32;
  StatusOr<Dataset> data = load_dataset(path, mapping);
  ASSERT_TRUE(data.is_ok());
  StatusOr<int64_t> strict = check_examples(*data, checks, mapping);
  ASSERT_FALSE(strict.is_ok());
  EXPECT_EQ(strict.status().message(),
            path + ":2: prompt of 40 tokens + rollout.max_new_tokens 32 = 72 exceeds the model's context of 64 tokens "
                   "(max_position_embeddings); shorten it, lower rollout.max_new_tokens, or set "
                   "data.overlong_prompts: skip");

  checks.overlong = OverlongPrompts::kSkip;
  StatusOr<Dataset> again = load_dataset(path, mapping);
  ASSERT_TRUE(again.is_ok());
  StatusOr<int64_t> skipped = check_examples(*again, checks, mapping);
  ASSERT_TRUE(skipped.is_ok()) << skipped.status().message();
  EXPECT_EQ(*skipped, 1);  // 32 + 32 = 64 fits exactly
  ASSERT_EQ(again->examples.size(), 2u);
  EXPECT_EQ(again->examples[1].prompt, std::string(32, 'y'));

  checks.max_new_tokens = 64;
  EXPECT_FALSE(check_examples(*again, checks, mapping).is_ok());  // no room for any prompt
}

StepHealth flat_step() {
  StepHealth h;
  h.zero_std_group_fraction = 1.0;
  h.reward_evaluations = 16;
  h.updates = 1;
  return h;
}

TEST(Guards, ZeroVarianceForKConsecutiveStepsStops) {
  GuardConfig config;
  config.zero_variance_steps = 3;
  TrainingGuards guards(config, true);
  StepHealth some_signal = flat_step();
  some_signal.zero_std_group_fraction = 0.75;
  EXPECT_TRUE(guards.observe(1, flat_step()).is_ok());
  EXPECT_TRUE(guards.observe(2, flat_step()).is_ok());
  EXPECT_TRUE(guards.observe(3, some_signal).is_ok());  // the count starts again
  EXPECT_TRUE(guards.observe(4, flat_step()).is_ok());
  EXPECT_TRUE(guards.observe(5, flat_step()).is_ok());
  const Status stopped = guards.observe(6, flat_step());
  ASSERT_FALSE(stopped.is_ok());
  EXPECT_NE(stopped.message().find("stopping at step 6"), std::string::npos) << stopped.message();
  EXPECT_NE(stopped.message().find("trainer.guards.zero_variance_steps = 3"), std::string::npos);

  config.zero_variance_steps = 0;  // off
  TrainingGuards off(config, true);
  for (int step = 1; step <= 50; ++step) EXPECT_TRUE(off.observe(step, flat_step()).is_ok());
}

TEST(Guards, SkippedUpdateFractionOverTheWindowStops) {
  GuardConfig config;
  config.max_skipped_update_fraction = 0.5;
  config.window_steps = 4;
  TrainingGuards guards(config, true);
  StepHealth ok = flat_step(), skipped = flat_step();
  skipped.skipped_updates = 1;
  // An lr of 1e30: the first update lands, every later one is skipped.
  EXPECT_TRUE(guards.observe(1, ok).is_ok());
  EXPECT_TRUE(guards.observe(2, skipped).is_ok());  // 1 of 2: not past 0.5
  const Status stopped = guards.observe(3, skipped);  // 2 of 3
  ASSERT_FALSE(stopped.is_ok());
  EXPECT_NE(stopped.message().find("2 of 3 optimizer updates were skipped"), std::string::npos) << stopped.message();

  // One skipped update now and then, over a window, does not stop a run.
  TrainingGuards sparse(config, true);
  for (int step = 1; step <= 40; ++step) EXPECT_TRUE(sparse.observe(step, step % 4 == 0 ? skipped : ok).is_ok());
}

TEST(Guards, RewardErrorFractionStopsAndZeroTurnsItOff) {
  GuardConfig config;
  config.max_reward_error_fraction = 0.25;
  config.window_steps = 2;
  StepHealth failing = flat_step();
  failing.zero_std_group_fraction = 0.0;
  failing.reward_errors = 6;  // of 16
  TrainingGuards guards(config, true);
  const Status stopped = guards.observe(1, failing);
  ASSERT_FALSE(stopped.is_ok());
  EXPECT_NE(stopped.message().find("6 of 16 reward evaluations failed"), std::string::npos) << stopped.message();
  EXPECT_NE(stopped.message().find("trainer.guards.max_reward_error_fraction = 0.25"), std::string::npos);

  failing.reward_errors = 4;  // exactly the threshold is not past it
  TrainingGuards at_limit(config, true);
  EXPECT_TRUE(at_limit.observe(1, failing).is_ok());

  config.max_reward_error_fraction = 0;
  TrainingGuards off(config, true);
  failing.reward_errors = 16;
  EXPECT_TRUE(off.observe(1, failing).is_ok());
}

}  // namespace
}  // namespace grpo
