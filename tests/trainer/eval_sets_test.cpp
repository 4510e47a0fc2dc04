// The ready configs under configs/eval/ parse and load their ../shared/data sets with every field
// their rewards need; HumanEval's canonical solutions and MBPP's reference programs, judged by
// those configs' code reward in the sandbox, count as passes through eval's scoring path.

#include "trainer/eval_sets.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <map>

#include "core/jsonl.h"
#include "rewards/sandbox.h"
#include "tests/support/fixtures.h"
#include "trainer/trainers.h"

namespace grpo {
namespace {

// The configs name their data relative to the repository root, as a user runs them.
class EvalConfigs : public ::testing::Test {
 protected:
  void SetUp() override {
    if (Status s = sandbox_available(); !s.is_ok()) GTEST_SKIP() << "the code reward needs the sandbox: " << s.message();
    previous_ = std::filesystem::current_path();
    std::filesystem::current_path(GRPO_SOURCE_DIR);
  }
  void TearDown() override {
    if (!previous_.empty()) std::filesystem::current_path(previous_);
  }

  static std::vector<EvalSet> load(const std::string& config_path, const std::vector<std::string>& overrides = {}) {
    StatusOr<Config> config = load_config(config_path, overrides);
    if (!config) throw std::runtime_error(config.status().message());
    StatusOr<std::vector<EvalSet>> sets = load_eval_sets(*config);
    if (!sets) throw std::runtime_error(sets.status().message());
    return std::move(sets).value();
  }

  std::filesystem::path previous_;
};

TEST_F(EvalConfigs, EveryReadyConfigLoadsItsSets) {
  // Problem counts and first records from each set's README (../shared/data/*/README.md).
  const std::map<std::string, std::pair<size_t, std::string>> expected = {
      {"gsm8k", {1319, "Janet\u2019s ducks lay 16 eggs per day."}},
      {"math500", {500, "Convert the point $(0,3)$ in rectangular coordinates"}},
      {"aime2024", {30, "Every morning Aya goes for a $9$-kilometer-long walk"}},
      {"humaneval", {164, "def has_close_elements(numbers: List[float], threshold: float) -> bool:"}},
      {"mbpp", {500, "Write a python function to remove first and last occurrence of a given character"}}};
  std::map<std::string, int> seen;
  for (const char* file : {"gsm8k", "math500", "aime2024", "humaneval", "mbpp", "r1"}) {
    SCOPED_TRACE(file);
    const std::vector<EvalSet> sets = load(std::string("configs/eval/") + file + ".yaml");
    ASSERT_EQ(sets.size(), std::string(file) == "r1" ? 5u : 1u);
    for (const EvalSet& set : sets) {
      ++seen[set.config.name];
      const auto& [count, first_text] = expected.at(set.config.name);
      EXPECT_EQ(set.problems.size(), count) << set.config.name;
      EXPECT_NE(set.problems.front().prompt.find(first_text), std::string::npos) << set.problems.front().prompt;
      const bool code = set.config.name == "humaneval" || set.config.name == "mbpp";
      EXPECT_EQ(set.judge.deciding, std::vector<std::string>{code ? "code" : "math"});
      EXPECT_EQ(set.judge.vote, code ? EvalVote::kCode : EvalVote::kMath);
      if (!code) {
        EXPECT_NE(set.problems.front().prompt.find("within \\boxed{}."), std::string::npos);
      }
    }
  }
  for (const auto& [name, unused] : expected) EXPECT_EQ(seen[name], 2) << name;  // its own file and r1.yaml
}

// MBPP's conventional test split is task_id 11-510; the prompt carries the three asserts.
TEST_F(EvalConfigs, MbppIsTheTestSplitWithItsAsserts) {
  const std::vector<EvalSet> sets = load("configs/eval/mbpp.yaml");
  const std::vector<Example>& problems = sets.at(0).problems;
  EXPECT_EQ(problems.front().fields["task_id"], 11);
  EXPECT_EQ(problems.front().id, "11");  // rows name problems by their task_id
  EXPECT_EQ(problems.back().fields["task_id"], 510);
  for (const auto& test : problems.front().fields["test_list"])
    EXPECT_NE(problems.front().prompt.find(test.get<std::string>()), std::string::npos) << problems.front().prompt;
}

// A reward whose fields a set lacks stops the load naming the file:line and the field: the code
// reward on GSM8K, the math reward on HumanEval (no answer).
TEST_F(EvalConfigs, MissingRewardFieldsFailAtLoadNamingTheRecord) {
  try {
    load("configs/eval/gsm8k.yaml", {"eval.datasets=[{name: g, path: ../shared/data/gsm8k/test.jsonl, prompt_field: "
                                     "question, rewards: [{name: code}]}]"});
    ADD_FAILURE() << "loaded GSM8K with the code reward";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("gsm8k/test.jsonl:1: reward 'code' needs field 'test + entry_point"),
              std::string::npos) << e.what();
  }
  try {
    load("configs/eval/humaneval.yaml", {"eval.datasets=[{name: h, path: ../shared/data/humaneval/HumanEval.jsonl}]"});
    ADD_FAILURE() << "loaded HumanEval with the math reward";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("HumanEval.jsonl:1: reward 'math' needs field 'answer'"), std::string::npos)
        << e.what();
  }
  try {
    load("configs/eval/gsm8k.yaml", {"eval.datasets=[{name: g, path: ../shared/data/gsm8k/test.jsonl, prompt_field: "
                                     "question, prompt_template: '{problem}'}]"});
    ADD_FAILURE() << "rendered a template naming a field GSM8K lacks";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("gsm8k/test.jsonl:1: eval.datasets[0].prompt_template: the record has no "
                                         "field 'problem'"),
              std::string::npos) << e.what();
  }
}

// HumanEval through humaneval.yaml's reward set and judge: per problem, the canonical body, the
// whole function in a fenced block (as the prompt asks), and twice the same wrong body. By hand:
// 2 of 4 correct, pass@2 = 1 - C(2,2)/C(4,2) = 5/6, and the wrong body (2 votes, first) wins the
// vote. Judged by the math reward instead (eval before it took the reward set), nothing passes.
TEST_F(EvalConfigs, HumanEvalCanonicalSolutionsPassThroughEvalScoring) {
  const std::vector<EvalSet> sets = load("configs/eval/humaneval.yaml", {"eval.max_problems=3"});
  const EvalSet& set = sets.at(0);
  ASSERT_EQ(set.problems.size(), 3u);
  std::vector<const Example*> problems;
  std::vector<std::string> completions;
  for (const Example& e : set.problems) {
    problems.push_back(&e);
    const std::string canonical = e.fields["canonical_solution"];
    const std::string wrong = "    return None\n";
    completions.insert(completions.end(), {wrong, canonical, wrong,
                                           "Here it is:\n```python\n" + e.fields["prompt"].get<std::string>() + canonical + "```\n"});
  }
  ThreadPool pool(2);
  const std::vector<int64_t> lengths(completions.size(), -1);
  StatusOr<Config> config = load_config("configs/eval/humaneval.yaml");
  ASSERT_TRUE(config.is_ok());
  const EvalSetTally t = score_eval_samples(problems, completions, lengths, 4, set.rewards, config->reward, set.judge, pool);
  EXPECT_DOUBLE_EQ(t.reward_errors, 0.0);
  EXPECT_DOUBLE_EQ(t.correct, 6.0);
  ASSERT_EQ(t.pass_at.size(), 3u);
  EXPECT_NEAR(t.pass_at[1], 3 * 5.0 / 6.0, 1e-12);
  EXPECT_DOUBLE_EQ(t.pass_at[2], 3.0);
  EXPECT_DOUBLE_EQ(t.consensus, 0.0);
  EXPECT_DOUBLE_EQ(t.reward_sums.at("code"), 6.0);
  for (const auto& row : t.problem_rows) EXPECT_EQ(row["votes"], 2);
  EXPECT_EQ(t.problem_rows[2]["id"], "HumanEval/2");

  // The canonical body given twice (after one wrong): it wins the vote, and 3 of 4 pass.
  for (size_t p = 0; p < 3; ++p) completions[4 * p + 2] = completions[4 * p + 1];
  const EvalSetTally twice = score_eval_samples(problems, completions, lengths, 4, set.rewards, config->reward, set.judge, pool);
  EXPECT_DOUBLE_EQ(twice.correct, 9.0);
  EXPECT_DOUBLE_EQ(twice.consensus, 3.0);

  StatusOr<RewardSet> math = RewardSet::create({RewardFunctionConfig{"math", "", 1.0, nlohmann::json::object()}});
  ASSERT_TRUE(math.is_ok());
  EvalJudge by_math = set.judge;
  by_math.deciding = {"math"};
  RewardConfig lenient = config->reward;
  lenient.on_error = RewardErrorPolicy::kScore;  // HumanEval has no gold answer for the math reward
  EXPECT_DOUBLE_EQ(score_eval_samples(problems, completions, lengths, 4, *math, lenient, by_math, pool).correct, 0.0);
}

// MBPP's reference programs through mbpp.yaml's reward set: every assert passes.
TEST_F(EvalConfigs, MbppReferenceProgramsPassThroughEvalScoring) {
  const std::vector<EvalSet> sets = load("configs/eval/mbpp.yaml", {"eval.max_problems=4"});
  const EvalSet& set = sets.at(0);
  std::vector<const Example*> problems;
  std::vector<std::string> completions;
  for (const Example& e : set.problems) {
    problems.push_back(&e);
    completions.push_back("```python\n" + e.fields["code"].get<std::string>() + "\n```");
    completions.push_back("```python\nprint('not a solution')\n```");
  }
  ThreadPool pool(2);
  StatusOr<Config> config = load_config("configs/eval/mbpp.yaml");
  ASSERT_TRUE(config.is_ok());
  const EvalSetTally t = score_eval_samples(problems, completions, std::vector<int64_t>(completions.size(), -1), 2,
                                            set.rewards, config->reward, set.judge, pool);
  EXPECT_DOUBLE_EQ(t.correct, 4.0);
  EXPECT_DOUBLE_EQ(t.pass_at.back(), 4.0);
}

}  // namespace
}  // namespace grpo
