// How eval judges samples with any reward set: the correctness rule, cons@k and pass@k against
// hand computations, and prompt templates. No model: known completions go through the very
// scoring path `grpo eval` uses (score_eval_samples).

#include "trainer/eval_scoring.h"

#include <gtest/gtest.h>

#include <stdexcept>

#include "trainer/eval_sets.h"
#include "trainer/trainers.h"

namespace grpo {
namespace {

RewardFunctionConfig function(const std::string& name, nlohmann::json options = nlohmann::json::object(),
                              const std::string& label = "") {
  return RewardFunctionConfig{name, label, 1.0, std::move(options)};
}

// A reward that scores the sample's field "score" (or throws when it is "throw"), with no
// `correct` component: the threshold decides for it.
void register_field_score_reward() {
  static const bool registered = [] {
    register_reward("field_score", [](const nlohmann::json&) -> StatusOr<std::unique_ptr<Reward>> {
      struct FieldScore final : Reward {
        RewardScore score(const RewardSample& s) const override {
          if (s.fields.at("score").is_string()) throw std::runtime_error("asked to fail");
          RewardScore r;
          r.score = s.fields.at("score").get<double>();
          r.reason = "the field's score";
          return r;
        }
      };
      return std::unique_ptr<Reward>(new FieldScore);
    });
    return true;
  }();
  (void)registered;
}

struct Scored {
  EvalSetTally tally;
  EvalJudge judge;
};

// k completions per problem (problem-major) scored by `functions` and judged by `set`'s rule.
Scored score(const std::vector<Example>& problems, const std::vector<std::string>& completions, int64_t k,
             const std::vector<RewardFunctionConfig>& functions, const EvalDatasetConfig& set = {},
             RewardConfig reward_config = {}) {
  StatusOr<RewardSet> rewards = RewardSet::create(functions);
  if (!rewards) throw std::runtime_error(rewards.status().message());
  StatusOr<EvalJudge> judge = make_eval_judge(functions, set, "eval.datasets[0]");
  if (!judge) throw std::runtime_error(judge.status().message());
  std::vector<const Example*> pointers;
  for (const Example& e : problems) pointers.push_back(&e);
  ThreadPool pool(2);
  const std::vector<int64_t> lengths(completions.size(), 10);
  return {score_eval_samples(pointers, completions, lengths, k, *rewards, reward_config, *judge, pool), *judge};
}

Example math_problem(const std::string& id, const std::string& gold) {
  Example e;
  e.id = id;
  e.prompt = "question " + id;
  e.answer = gold;
  e.fields = {{"answer", gold}};
  return e;
}

TEST(EvalScoring, PassAtKIsTheUnbiasedEstimatorByHand) {
  // 1 - C(n-c, k) / C(n, k), the binomials written out.
  EXPECT_NEAR(pass_at_k(5, 2, 2), 1.0 - 3.0 / 10.0, 1e-12);          // C(3,2)=3, C(5,2)=10
  EXPECT_NEAR(pass_at_k(4, 1, 2), 1.0 - 3.0 / 6.0, 1e-12);           // C(3,2)=3, C(4,2)=6
  EXPECT_NEAR(pass_at_k(64, 1, 8), 1.0 - 56.0 / 64.0, 1e-12);        // C(63,8)/C(64,8) = 56/64
  EXPECT_NEAR(pass_at_k(16, 3, 4), 1.0 - 715.0 / 1820.0, 1e-12);     // C(13,4)=715, C(16,4)=1820
  EXPECT_NEAR(pass_at_k(64, 10, 1), 10.0 / 64.0, 1e-12);             // pass@1 = c/n
  EXPECT_DOUBLE_EQ(pass_at_k(8, 0, 8), 0.0);
  EXPECT_DOUBLE_EQ(pass_at_k(8, 7, 2), 1.0);                         // n - c < k: every pair holds a pass
  EXPECT_EQ(pass_ladder(64), (std::vector<int64_t>{1, 2, 4, 8, 16, 32, 64}));
  EXPECT_EQ(pass_ladder(6), (std::vector<int64_t>{1, 2, 4, 6}));
  EXPECT_EQ(pass_ladder(1), (std::vector<int64_t>{1}));
}

// Three problems, four samples each, the math reward; every number below is counted by hand.
TEST(EvalScoring, MathSetConsensusAndPassAtKByHand) {
  const std::vector<Example> problems = {math_problem("p1", "12"), math_problem("p2", "0.75"), math_problem("p3", "6")};
  const std::vector<std::string> completions = {
      // p1: one correct; 7 and 7.0 are one answer with 2 votes -> the majority is wrong.
      "so \\boxed{12}", "\\boxed{7}", "<answer>7.0</answer>", "I do not know",
      // p2: 3/4, 0.75 and \frac{3}{4} are one answer (3 votes, correct); 1 is wrong.
      "\\boxed{3/4}", "\\boxed{0.75}", "\\boxed{1}", "\\boxed{\\frac{3}{4}}",
      // p3: 5 and 6 tie at one vote; the answer given first (5, wrong) wins.
      "\\boxed{5}", "\\boxed{6}", "no answer", "none either"};
  const Scored s = score(problems, completions, 4, {function("math"), function("format")});
  EXPECT_EQ(s.judge.deciding, std::vector<std::string>{"math"});
  EXPECT_EQ(s.judge.vote, EvalVote::kMath);
  EXPECT_DOUBLE_EQ(s.tally.correct, 1 + 3 + 1);
  EXPECT_DOUBLE_EQ(s.tally.consensus, 1.0);  // p2 only
  ASSERT_EQ(s.tally.pass_at.size(), 3u);     // k = 1, 2, 4
  EXPECT_NEAR(s.tally.pass_at[0], 0.25 + 0.75 + 0.25, 1e-12);
  // pass@2 with n = 4: c = 1 -> 1 - C(3,2)/C(4,2) = 1/2; c = 3 -> 1.
  EXPECT_NEAR(s.tally.pass_at[1], 0.5 + 1.0 + 0.5, 1e-12);
  EXPECT_NEAR(s.tally.pass_at[2], 3.0, 1e-12);
  EXPECT_EQ(s.tally.problem_rows[0]["majority"], "7");
  EXPECT_EQ(s.tally.problem_rows[0]["votes"], 2);
  EXPECT_EQ(s.tally.problem_rows[1]["votes"], 3);
  EXPECT_EQ(s.tally.problem_rows[2]["majority"], "5");
  EXPECT_EQ(s.tally.problem_rows[2]["gold"], "6");
  EXPECT_DOUBLE_EQ(s.tally.reward_sums.at("math"), 5.0);
}

// cons@64 as DeepSeek-R1 reports it: 64 samples, 30 right (12, written three ways), 20 wrong (7),
// 14 without an answer. By hand: pass@1 = 30/64, pass@2 = 1 - C(34,2)/C(64,2) = 1 - 561/2016,
// pass@8 = 1 - C(34,8)/C(64,8) = 1 - 18156204/4426165368, cons@64 = 1 (12 has the most votes).
TEST(EvalScoring, ConsensusAtSixtyFour) {
  std::vector<std::string> completions;
  for (int i = 0; i < 64; ++i) {
    if (i % 32 < 10) completions.push_back(i % 3 == 0 ? "\\boxed{12}" : i % 3 == 1 ? "\\boxed{12.0}" : "\\boxed{\\frac{24}{2}}");
    else if (i % 32 < 15) completions.push_back("\\boxed{12}");
    else if (i % 32 < 25) completions.push_back("\\boxed{7}");
    else completions.push_back("no answer");
  }
  const Scored s = score({math_problem("p", "12")}, completions, 64, {function("math")});
  EXPECT_DOUBLE_EQ(s.tally.correct, 30.0);
  EXPECT_DOUBLE_EQ(s.tally.consensus, 1.0);
  EXPECT_EQ(s.tally.problem_rows[0]["votes"], 30);
  ASSERT_EQ(s.tally.pass_at.size(), 7u);  // 1, 2, 4, 8, 16, 32, 64
  EXPECT_NEAR(s.tally.pass_at[0], 30.0 / 64.0, 1e-12);
  EXPECT_NEAR(s.tally.pass_at[1], 1.0 - 561.0 / 2016.0, 1e-12);
  EXPECT_NEAR(s.tally.pass_at[3], 1.0 - 18156204.0 / 4426165368.0, 1e-12);
  EXPECT_DOUBLE_EQ(s.tally.pass_at[6], 1.0);
  // The same samples with 7 given 31 times: 7 wins the vote, and cons@64 is 0.
  for (int i = 25; i < 32; ++i) completions[static_cast<size_t>(i)] = completions[static_cast<size_t>(i + 32)] = "\\boxed{7}";
  const Scored t = score({math_problem("p", "12")}, completions, 64, {function("math")});
  EXPECT_DOUBLE_EQ(t.tally.consensus, 0.0);
  EXPECT_EQ(t.tally.problem_rows[0]["majority"], "7");
  EXPECT_EQ(t.tally.problem_rows[0]["votes"], 34);
}

// The math reward's `correct` component decides, whatever score the config gives a right answer.
TEST(EvalScoring, CorrectComponentDecidesOverTheScore) {
  const Scored s = score({math_problem("p", "3")}, {"\\boxed{3}", "\\boxed{4}"}, 2,
                         {function("math", {{"correct", 0.25}})});
  EXPECT_DOUBLE_EQ(s.tally.correct, 1.0);
  EXPECT_DOUBLE_EQ(s.tally.reward_sums.at("math"), 0.25);
}

// A reward without a `correct` component passes at its threshold; a failed reward never does,
// even when reward.on_error gives it a high stand-in score.
TEST(EvalScoring, ThresholdAndFailedRewards) {
  register_field_score_reward();
  std::vector<Example> problems;
  for (const nlohmann::json& value : {nlohmann::json(0.49), nlohmann::json(0.5), nlohmann::json(0.9),
                                      nlohmann::json("throw")}) {
    Example e;
    e.id = "s" + std::to_string(problems.size());
    e.fields = {{"score", value}};
    problems.push_back(e);
  }
  EvalDatasetConfig set;
  set.correct_rewards = {"field_score"};
  set.correct_threshold = 0.5;
  RewardConfig lenient;
  lenient.on_error = RewardErrorPolicy::kScore;
  lenient.error_score = 1.0;
  const Scored s = score(problems, {"a", "b", "c", "d"}, 1, {function("field_score")}, set, lenient);
  EXPECT_DOUBLE_EQ(s.tally.correct, 2.0);  // 0.5 and 0.9
  EXPECT_DOUBLE_EQ(s.tally.reward_errors, 1.0);
  // No math or code reward and none named: the weighted total decides, at the same threshold.
  EvalDatasetConfig by_total;
  by_total.correct_threshold = 0.9;
  const Scored t = score(problems, {"a", "b", "c", "d"}, 1, {function("field_score")}, by_total, lenient);
  EXPECT_TRUE(t.judge.deciding.empty());
  EXPECT_EQ(t.judge.vote, EvalVote::kText);
  EXPECT_DOUBLE_EQ(t.tally.correct, 1.0);  // 0.9 only; the failed one is not correct at 1.0
}

TEST(EvalScoring, JudgeNamesItsRewardsAndRejectsUnknownLabels) {
  EvalDatasetConfig set;
  StatusOr<EvalJudge> code = make_eval_judge({function("code"), function("format")}, set, "eval.datasets[3]");
  ASSERT_TRUE(code.is_ok());
  EXPECT_EQ(code->deciding, std::vector<std::string>{"code"});
  EXPECT_EQ(code->vote, EvalVote::kCode);
  set.correct_rewards = {"acc"};
  StatusOr<EvalJudge> unknown = make_eval_judge({function("math", {}, "accuracy")}, set, "eval.datasets[3]");
  ASSERT_FALSE(unknown.is_ok());
  EXPECT_NE(unknown.status().message().find("eval.datasets[3].correct_rewards: 'acc'"), std::string::npos)
      << unknown.status().message();
  EXPECT_NE(unknown.status().message().find("accuracy"), std::string::npos) << unknown.status().message();
}

TEST(EvalScoring, VoteAnswers) {
  EXPECT_EQ(vote_answer("```python\ndef f():\n    return 1   \n\n```", EvalVote::kCode),
            vote_answer("text\n```python\ndef f():\n    return 1\n```\n", EvalVote::kCode));
  EXPECT_NE(vote_answer("```python\ndef f():\n    return 1\n```", EvalVote::kCode),
            vote_answer("```python\ndef f():\n    return 2\n```", EvalVote::kCode));
  EXPECT_EQ(vote_answer("<think>hmm</think>  Paris \n", EvalVote::kText), "Paris");
  EXPECT_EQ(vote_answer("<think>hmm</think>   ", EvalVote::kText), std::nullopt);
  EXPECT_EQ(vote_answer("no final answer", EvalVote::kMath), std::nullopt);
  EXPECT_TRUE(same_answer("\\frac{1}{2}", "0.5", EvalVote::kMath));
  EXPECT_FALSE(same_answer("\\frac{1}{2}", "0.5", EvalVote::kText));
}

TEST(EvalScoring, PromptTemplates) {
  const nlohmann::json fields = {{"text", "Add two numbers."}, {"test_list", {"assert add(1, 2) == 3", "assert add(0, 0) == 0"}},
                                 {"level", 2}};
  StatusOr<std::string> prompt =
      render_prompt_template("{text} Level {level}. Tests:\n{test_list}\nPut it in \\boxed{}, {{text}} stays.", fields);
  ASSERT_TRUE(prompt.is_ok()) << prompt.status().message();
  EXPECT_EQ(*prompt, "Add two numbers. Level 2. Tests:\nassert add(1, 2) == 3\nassert add(0, 0) == 0\n"
                     "Put it in \\boxed{}, {text} stays.");
  StatusOr<std::string> missing = render_prompt_template("{question}", fields);
  ASSERT_FALSE(missing.is_ok());
  EXPECT_NE(missing.status().message().find("'question'"), std::string::npos) << missing.status().message();
}

}  // namespace
}  // namespace grpo
