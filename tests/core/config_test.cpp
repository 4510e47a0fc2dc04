#include "core/config.h"

#include <gtest/gtest.h>

#include <fstream>

#include "core/atomic_file.h"

namespace grpo {
namespace {

constexpr const char* kMinimal = "model:\n  path: /models/qwen\n";

Config parse_ok(const std::string& yaml, const std::vector<std::string>& overrides = {}) {
  StatusOr<Config> config = parse_config(yaml, "run.yaml", overrides);
  EXPECT_TRUE(config.is_ok()) << config.status().message();
  return config.is_ok() ? *config : Config{};
}

std::string parse_error(const std::string& yaml, const std::vector<std::string>& overrides = {}) {
  StatusOr<Config> config = parse_config(yaml, "run.yaml", overrides);
  EXPECT_FALSE(config.is_ok()) << "expected an error for:\n" << yaml;
  return config.status().message();
}

TEST(Config, MinimalFileGetsDocumentedDefaults) {
  const Config config = parse_ok(kMinimal);
  EXPECT_EQ(config.model.path, "/models/qwen");
  EXPECT_EQ(config.grpo.group_size, 8);
  EXPECT_EQ(config.grpo.preset, GrpoPreset::kR1);
  EXPECT_DOUBLE_EQ(config.optimizer.lr, 1e-6);
  EXPECT_EQ(config.rollout.top_k, 0);
  EXPECT_EQ(config.logging.level, LogLevel::kInfo);
}

TEST(Config, ReadsNestedValuesOfEveryType) {
  const Config config = parse_ok(
      "model: {path: m, dtype: bfloat16}\n"
      "rollout:\n  temperature: 0.6\n  stop: ['</answer>', \"\\n\\n\"]\n"
      "grpo:\n  group_size: 16\n  kl: {beta: 0.04, estimator: low_var_kl, value_clamp: 10}\n"
      "  policy_loss: {ratio_cap: null, dual_clip_c: 3}\n"
      "logging: {all_ranks: yes}\n");
  EXPECT_EQ(config.model.dtype, DType::kBFloat16);
  EXPECT_DOUBLE_EQ(config.rollout.temperature, 0.6);
  EXPECT_EQ(config.rollout.stop, (std::vector<std::string>{"</answer>", "\n\n"}));
  EXPECT_EQ(config.grpo.group_size, 16);
  EXPECT_EQ(config.grpo.kl.estimator, KlEstimator::kK3);  // verl's alias
  EXPECT_EQ(config.grpo.kl.value_clamp, 10.0);
  EXPECT_FALSE(config.grpo.policy_loss.ratio_cap.has_value());
  EXPECT_EQ(config.grpo.policy_loss.dual_clip_c, 3.0);
  EXPECT_TRUE(config.logging.all_ranks);
}

TEST(Config, UnknownKeyNamesLineAndClosestKey) {
  const std::string error = parse_error("model:\n  path: m\ngrpo:\n  kl:\n    bta: 0.1\n");
  EXPECT_EQ(error, "run.yaml:5: grpo.kl.bta: unknown key; did you mean 'grpo.kl.beta'?");
}

TEST(Config, UnknownSectionListsValidOnesWhenNothingIsClose) {
  const std::string error = parse_error("model:\n  path: m\nzzzzzzzz: 1\n");
  EXPECT_NE(error.find("run.yaml:3: zzzzzzzz: unknown key (valid keys here: model, data, rollout"), std::string::npos)
      << error;
}

TEST(Config, WrongTypeNamesKeyLineAndValue) {
  EXPECT_EQ(parse_error("model:\n  path: m\ntrainer:\n  steps: many\n"),
            "run.yaml:4: trainer.steps: expected an integer >= 1, got 'many'");
  EXPECT_EQ(parse_error("model:\n  path: m\nrollout:\n  temperature: [1]\n"),
            "run.yaml:4: rollout.temperature: expected a number >= 0, got a list");
  EXPECT_EQ(parse_error("model:\n  path: m\ndata:\n  shuffle: maybe\n"),
            "run.yaml:4: data.shuffle: expected true or false, got 'maybe'");
  EXPECT_EQ(parse_error("model: m\n"), "run.yaml:1: model: expected a mapping of model keys, got 'm'");
  EXPECT_EQ(parse_error("model:\n  path: m\nrollout:\n  stop: [\"</answer>\", \"\"]\n"),
            "run.yaml:4: rollout.stop: expected a list of non-empty strings (item 2 is empty), got a list");
}

TEST(Config, OutOfRangeNamesTheBounds) {
  EXPECT_EQ(parse_error("model:\n  path: m\nrollout:\n  top_p: 1.5\n"),
            "run.yaml:4: rollout.top_p: expected a number > 0 and <= 1, got '1.5'");
  EXPECT_EQ(parse_error("model:\n  path: m\ngrpo:\n  kl: {beta: -0.1}\n"),
            "run.yaml:4: grpo.kl.beta: expected a number >= 0, got '-0.1'");
  EXPECT_NE(parse_error("model:\n  path: m\nrollout:\n  temperature: .nan\n").find("rollout.temperature"),
            std::string::npos);
}

TEST(Config, EnumErrorListsValidNamesAndSuggests) {
  EXPECT_EQ(parse_error("model:\n  path: m\ngrpo:\n  preset: verll\n"),
            "run.yaml:4: grpo.preset: expected one of r1, verl, trl, dapo, dr_grpo, gspo (did you mean 'verl'?), got "
            "'verll'");
}

TEST(Config, MissingRequiredFieldIsAnError) {
  const std::string error = parse_error("reward:\n  functions:\n    - weight: 2\n");
  EXPECT_EQ(error, "run.yaml:3: reward.functions[0].name: missing required key (Registered reward: math, format, "
                   "language, length, code, plugin, subprocess, reward_model.)");
}

TEST(Config, ListsOfStructsWithFreeFormOptions) {
  const Config config = parse_ok(
      "reward:\n  functions:\n    - name: math\n      options: {answer_field: solution, correct: 2}\n"
      "    - name: format\n      weight: 0.1\n      options:\n        mode: lenient\n        list: [1, two]\n");
  ASSERT_EQ(config.reward.functions.size(), 2u);
  EXPECT_EQ(config.reward.functions[0].name, "math");
  EXPECT_EQ(config.reward.functions[0].options["answer_field"], "solution");
  EXPECT_EQ(config.reward.functions[0].options["correct"], 2);
  EXPECT_DOUBLE_EQ(config.reward.functions[1].weight, 0.1);
  EXPECT_EQ(config.reward.functions[1].options["list"], nlohmann::json::parse(R"([1, "two"])"));
  // The printed YAML reads back to the same list.
  const Config again = parse_ok(config_to_yaml(config));
  EXPECT_EQ(config_to_yaml(again), config_to_yaml(config));
  EXPECT_EQ(again.reward.functions[1].options["mode"], "lenient");
  EXPECT_EQ(parse_error("reward:\n  functions:\n    - name: math\n      wieght: 1\n"),
            "run.yaml:4: reward.functions[0].wieght: unknown key; did you mean 'reward.functions[0].weight'?");
  EXPECT_EQ(parse_error("reward:\n  functions: math\n"), "run.yaml:2: reward.functions: expected a list, got 'math'");
}

TEST(Config, EveryProblemIsReportedOneLineEachInFileOrder) {
  const std::string error = parse_error("model:\n  path: m\ntrainer:\n  steps: 0\n  sed: 1\n");
  EXPECT_EQ(error,
            "run.yaml:4: trainer.steps: expected an integer >= 1, got '0'\n"
            "run.yaml:5: trainer.sed: unknown key; did you mean 'trainer.seed'?");
}

TEST(Config, DuplicateKeysAreErrors) {
  EXPECT_EQ(parse_error("model:\n  path: a\ntrainer:\n  steps: 3\ntrainer:\n  steps: 4\n"),
            "run.yaml:5: trainer: duplicate key (first written at line 3)");
}

TEST(Config, InvalidYamlNamesTheLine) {
  EXPECT_NE(parse_error("model:\n  path: [unclosed\n").find("run.yaml:"), std::string::npos);
}

TEST(Config, CommandLineOverridesWin) {
  const Config config = parse_ok("model:\n  path: m\ngrpo:\n  group_size: 4\n",
                                 {"grpo.group_size=16", "optimizer.lr=3e-6", "rollout.stop=[a, b]", "model.path=x"});
  EXPECT_EQ(config.grpo.group_size, 16);
  EXPECT_DOUBLE_EQ(config.optimizer.lr, 3e-6);
  EXPECT_EQ(config.rollout.stop, (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(config.model.path, "x");
}

TEST(Config, OverrideErrorsNameTheOverride) {
  EXPECT_EQ(parse_error(kMinimal, {"grpo.kl.beta=abc"}),
            "command-line override 'grpo.kl.beta=abc': grpo.kl.beta: expected a number >= 0, got 'abc'");
  EXPECT_EQ(parse_error(kMinimal, {"grpo.group_sise=3"}),
            "command-line override 'grpo.group_sise=3': grpo.group_sise: unknown key; did you mean "
            "'grpo.group_size'?");
  EXPECT_EQ(parse_error(kMinimal, {"noequals"}), "command-line override 'noequals': expected key.path=value");
  EXPECT_EQ(parse_error(kMinimal, {"model.path.deeper=1"}),
            "command-line override 'model.path.deeper=1': 'path' is not a mapping");
}

TEST(Config, PresetSetsDefaultsThatExplicitKeysOverride) {
  const Config verl = parse_ok("model: {path: m}\ngrpo:\n  preset: verl\n  kl: {beta: 0.01}\n");
  EXPECT_EQ(verl.grpo.aggregation.mode, LossAggregation::kTokenMean);
  EXPECT_EQ(verl.grpo.policy_loss.dual_clip_c, 3.0);
  EXPECT_EQ(verl.grpo.kl.value_clamp, 10.0);
  EXPECT_DOUBLE_EQ(verl.grpo.kl.beta, 0.01);

  const Config trl = parse_ok("model: {path: m}\ngrpo: {preset: trl}\n");
  EXPECT_DOUBLE_EQ(trl.grpo.advantage.std_epsilon, 1e-4);
  EXPECT_EQ(trl.grpo.advantage.singleton_group, SingletonGroup::kZeroAdvantage);
  EXPECT_TRUE(trl.grpo.aggregation.count_empty_sequences);

  const Config dapo = parse_ok(kMinimal, {"grpo.preset=dapo"});
  EXPECT_DOUBLE_EQ(dapo.grpo.policy_loss.eps_high, 0.28);
  EXPECT_DOUBLE_EQ(dapo.grpo.kl.beta, 0.0);

  const Config dr = parse_ok(kMinimal, {"grpo.preset=dr_grpo"});
  EXPECT_EQ(dr.grpo.advantage.scaling, AdvantageScaling::kNone);
  EXPECT_EQ(dr.grpo.aggregation.mode, LossAggregation::kSeqMeanTokenSumNorm);

  const Config gspo = parse_ok(kMinimal, {"grpo.preset=gspo"});
  EXPECT_EQ(gspo.grpo.policy_loss.importance_level, ImportanceLevel::kSequence);
  EXPECT_EQ(gspo.grpo.policy_loss.sequence_log_ratio_cap, 10.0);
  EXPECT_DOUBLE_EQ(gspo.grpo.policy_loss.eps_high, 4e-4);
}

// The off-policy keys: a list of rejection rules, an optional enum (kl_mode), and a round trip
// through the resolved YAML.
TEST(Config, RolloutCorrectionKeysParseAndRoundTrip) {
  const Config c = parse_ok(std::string(kMinimal) +
                                "grpo:\n  max_logp_mismatch: 0.01\n  aggregation: {kl_mode: token-mean}\n"
                                "  rollout_correction:\n    level: sequence\n    bounds: mask\n    weight_max: 3\n"
                                "    rejection:\n      - {statistic: token_k1, lower: 0.5, upper: 4}\n"
                                "      - {statistic: seq_max_k2, upper: 2.5}\n",
                            {});
  const RolloutCorrectionOptions& r = c.grpo.rollout_correction;
  EXPECT_EQ(r.level, CorrectionLevel::kSequence);
  EXPECT_EQ(r.bounds, WeightBounds::kMask);
  EXPECT_EQ(r.weight_max, 3.0);
  EXPECT_FALSE(r.weight_min);
  ASSERT_EQ(r.rejection.size(), 2u);
  EXPECT_EQ(r.rejection[0].statistic, RejectionStatistic::kTokenK1);
  EXPECT_EQ(r.rejection[0].lower, 0.5);
  EXPECT_EQ(r.rejection[1].statistic, RejectionStatistic::kSeqMaxK2);
  EXPECT_FALSE(r.rejection[1].lower);
  EXPECT_EQ(c.grpo.aggregation.kl_mode, LossAggregation::kTokenMean);
  EXPECT_EQ(c.grpo.max_logp_mismatch, 0.01);
  EXPECT_FALSE(Config{}.grpo.aggregation.kl_mode);
  const Config again = parse_ok(config_to_yaml(c), {});
  EXPECT_EQ(config_to_yaml(again), config_to_yaml(c));
  EXPECT_EQ(again.grpo.rollout_correction.rejection.size(), 2u);
  EXPECT_EQ(parse_error(std::string(kMinimal) + "grpo:\n  rollout_correction:\n    rejection:\n      - {statistic: token_k4}\n"),
            "run.yaml:6: grpo.rollout_correction.rejection[0].statistic: expected one of token_k1, token_k2, token_k3, "
            "seq_sum_k1, seq_sum_k2, seq_sum_k3, seq_mean_k1, seq_mean_k2, seq_mean_k3, seq_max_k2, seq_max_k3 (did you "
            "mean 'token_k1'?), got 'token_k4'");
}

TEST(Config, StructDefaultsAreTheR1Preset) {
  GrpoConfig defaults;
  GrpoConfig r1;
  r1.kl.beta = 123;  // something the preset must overwrite
  apply_grpo_preset(GrpoPreset::kR1, r1);
  EXPECT_EQ(config_to_yaml(Config{}), [&] {
    Config c;
    c.grpo = r1;
    return config_to_yaml(c);
  }());
}

TEST(Config, ResolvedYamlReadsBackToTheSameConfig) {
  const Config config = parse_ok(
      "model: {path: \"/a b/c\"}\nrollout: {stop: ['\"q\"', 'x: y'], temperature: 0.7}\n"
      "grpo: {preset: verl, policy_loss: {ratio_cap: 2.5}}\noptimizer: {lr: 1.0e-7}\n");
  const std::string yaml = config_to_yaml(config);
  const Config again = parse_ok(yaml);
  EXPECT_EQ(config_to_yaml(again), yaml);
  EXPECT_EQ(again.rollout.stop, config.rollout.stop);
  EXPECT_EQ(again.model.path, "/a b/c");
  EXPECT_EQ(again.grpo.policy_loss.ratio_cap, 2.5);
  EXPECT_DOUBLE_EQ(again.optimizer.lr, 1e-7);
}

// An eval set with its own rewards (a list inside a list item), window, template and rule.
TEST(Config, EvalSetsWithTheirOwnRewardsRoundTrip) {
  const Config config = parse_ok(
      "eval:\n  max_new_tokens: 32768\n  datasets:\n"
      "    - name: mbpp\n      path: mbpp.jsonl\n      skip: 10\n      limit: 500\n"
      "      prompt_template: \"{text}\\n{test_list}\"\n"
      "      rewards:\n        - {name: code, options: {timeout_s: 5}}\n        - {name: format, weight: 0.1}\n"
      "      correct_rewards: [code]\n      correct_threshold: 0.5\n      vote: text\n");
  ASSERT_EQ(config.eval.datasets.size(), 1u);
  const EvalDatasetConfig& set = config.eval.datasets[0];
  EXPECT_EQ(config.eval.max_new_tokens, 32768);
  EXPECT_EQ(set.skip, 10);
  EXPECT_EQ(set.limit, 500);
  EXPECT_EQ(set.prompt_template, "{text}\n{test_list}");
  ASSERT_EQ(set.rewards.size(), 2u);
  EXPECT_EQ(set.rewards[0].options["timeout_s"], 5);
  EXPECT_DOUBLE_EQ(set.rewards[1].weight, 0.1);
  EXPECT_EQ(set.correct_rewards, std::vector<std::string>{"code"});
  EXPECT_DOUBLE_EQ(set.correct_threshold, 0.5);
  EXPECT_EQ(set.vote, EvalVote::kText);
  const std::string yaml = config_to_yaml(config);
  const Config again = parse_ok(yaml);
  EXPECT_EQ(config_to_yaml(again), yaml);
  EXPECT_EQ(again.eval.datasets[0].rewards[1].name, "format");
  EXPECT_EQ(parse_error("eval:\n  datasets:\n    - {name: a, path: b, vote: majority}\n"),
            "run.yaml:3: eval.datasets[0].vote: expected one of auto, math, code, text, got 'majority'");
  EXPECT_EQ(parse_error("eval:\n  datasets:\n    - {name: a, path: b, skip: -1}\n"),
            "run.yaml:3: eval.datasets[0].skip: expected an integer >= 0, got '-1'");
}

TEST(Config, LoadConfigNamesAMissingFile) {
  StatusOr<Config> config = load_config("/nonexistent/run.yaml");
  ASSERT_FALSE(config.is_ok());
  EXPECT_NE(config.status().message().find("/nonexistent/run.yaml"), std::string::npos);
}

TEST(Config, ReferenceDocumentsEveryKeyWithItsDefault) {
  const std::string reference = config_reference_markdown();
  EXPECT_NE(reference.find("| `model.path` | string | `\"\"` |"), std::string::npos);
  EXPECT_NE(reference.find("| `reward.functions[].name` | string | required |"), std::string::npos);
  EXPECT_NE(reference.find("| `grpo.kl.beta` | number | `0.001` |"), std::string::npos);
  EXPECT_NE(reference.find("`low_var_kl`"), std::string::npos);
  // Every key the YAML writer emits appears in the reference.
  const std::string yaml = config_to_yaml(Config{});
  // The fields of reward.functions, eval.datasets and grpo.rollout_correction.rejection items:
  // default (empty) lists print none.
  size_t keys = 4 + 15 + 3;
  for (size_t pos = 0; (pos = yaml.find(": ", pos)) != std::string::npos; ++pos) ++keys;
  size_t rows = 0;
  for (size_t pos = 0; (pos = reference.find("\n| `", pos)) != std::string::npos; ++pos) ++rows;
  EXPECT_EQ(rows, keys);
}

TEST(Config, CommittedDocsMatchTheSchema) {
  StatusOr<std::string> docs = read_file(std::string(GRPO_SOURCE_DIR) + "/docs/configuration.md");
  ASSERT_TRUE(docs.is_ok()) << docs.status().message();
  EXPECT_NE(docs->find(config_reference_markdown()), std::string::npos)
      << "docs/configuration.md is out of date: regenerate it with launch/gen_docs.sh";
}

}  // namespace
}  // namespace grpo
