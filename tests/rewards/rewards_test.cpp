// The built-in rewards, the weighted scorer (errors, timeouts, policies) and both plugin kinds.

#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <thread>

#include "core/thread_pool.h"
#include "rewards/builtin_rewards.h"
#include "rewards/math_grader.h"
#include "rewards/reward_set.h"

namespace grpo {
namespace {

RewardScore score_with(const std::string& name, const nlohmann::json& options, const RewardSample& sample) {
  auto reward = make_reward(name, options);
  EXPECT_TRUE(reward.is_ok()) << reward.status().message();
  return (*reward)->score(sample);
}

RewardSample sample_of(const std::string& completion, nlohmann::json fields = nlohmann::json::object()) {
  RewardSample s;
  s.id = "s1";
  s.completion = completion;
  s.fields = std::move(fields);
  return s;
}

TEST(MathExtraction, FindsTheFinalAnswerInEachStyle) {
  EXPECT_EQ(extract_final_answer("so \\boxed{1} then \\boxed{\\frac{1}{2}}."), "\\frac{1}{2}");
  EXPECT_EQ(extract_final_answer("\\fbox{x^{2}+{1}}"), "x^{2}+{1}");
  EXPECT_EQ(extract_final_answer("<think>maybe 3</think><answer> 4 </answer>"), "4");
  EXPECT_EQ(extract_final_answer("<answer>so \\boxed{5}</answer>"), "5");
  EXPECT_EQ(extract_final_answer("Thus, the answer is: 12.\nDone"), "12");
  EXPECT_EQ(extract_final_answer("Natalia sold 72 clips.\n#### 72"), "72");
  EXPECT_FALSE(extract_final_answer("no answer here").has_value());
  EXPECT_EQ(gold_answer("She has 3 + 4 = 7 apples.\n#### 1,007"), "1007");
}

TEST(MathEquivalence, DecidesByMathematics) {
  struct Case { const char* candidate; const char* gold; bool equal; };
  const Case cases[] = {
      {"2^9 + 2", "514", true},                        // evaluated
      {"\\frac{2}{4}", "\\frac12", true},              // unreduced fractions are equal
      {"0.6667", "\\frac{2}{3}", false},               // a rounded decimal is not the number
      {"0.2", "20\\%", true},                          // percent means /100
      {"20", "20\\%", false},
      {"(1,2]", "(1,2)", false},                       // interval brackets matter
      {"[1, 2, 3]", "(1,2,3)", true},                  // a vector of 3 in either brackets
      {"3, 1, 2", "1,2,3", true},                      // a bare list is a set
      {"3, 1, 2", "(1,2,3)", false},                   // ... which is not a tuple
      {"x = 3", "3", true},
      {"2x + 2y = 4", "x + y = 2", true},              // the same line
      {"2x + 2y = 4", "x + y = 3", false},
      {"(x+1)(x+2)", "x^2+3x+2", true},
      {"1 \\pm \\sqrt{2}", "1+\\sqrt2, 1-\\sqrt2", true},
      {"\\sqrt{8}", "2\\sqrt{2}", true},
      {"2\\frac{1}{2}", "\\frac{5}{2}", true},         // a mixed number
      {"1 + i", "i + 1", true},
      {"\\text{(B)}", "B", true},
      {"\\text{B}", "\\text{C}", false},
      {"1{,}000{,}000", "10^6", true},
  };
  for (const Case& c : cases)
    EXPECT_EQ(math_equivalent(c.candidate, c.gold).equivalent, c.equal) << c.candidate << " vs " << c.gold;
}

TEST(MathReward, ScoresAndExplains) {
  const RewardScore right = score_with("math", {}, sample_of("<answer>\\boxed{0.5}</answer>", {{"answer", "\\frac12"}}));
  EXPECT_EQ(right.score, 1.0);
  EXPECT_EQ(right.components.at("correct"), 1.0);
  const RewardScore none = score_with("math", {{"no_answer", -1.0}}, sample_of("I give up", {{"answer", "1"}}));
  EXPECT_EQ(none.score, -1.0);
  EXPECT_EQ(none.components.at("answer_found"), 0.0);
  auto reward = make_reward("math", {});
  EXPECT_THROW((*reward)->score(sample_of("\\boxed{1}")), std::runtime_error);  // no gold: loud, not 0
}

TEST(FormatReward, StrictAndLenient) {
  const std::string good = "<think>\nreasoning\n</think>\n<answer>42</answer>";
  EXPECT_EQ(score_with("format", {}, sample_of(good)).score, 1.0);
  EXPECT_EQ(score_with("format", {}, sample_of("preamble " + good)).score, 0.0);
  EXPECT_EQ(score_with("format", {{"mode", "lenient"}}, sample_of("preamble " + good + " trailing")).score, 1.0);
  EXPECT_EQ(score_with("format", {}, sample_of("<think></think><answer>1</answer>")).score, 0.0);  // empty thought
  EXPECT_EQ(score_with("format", {}, sample_of("<think>a</think><think>b</think><answer>1</answer>")).score, 0.0);
  EXPECT_EQ(score_with("format", {{"answer_tags", false}}, sample_of("<think>a</think> The answer is 3.")).score, 1.0);
  EXPECT_EQ(score_with("format", {{"prompt_opens_think", true}}, sample_of("a</think><answer>1</answer>")).score, 1.0);
  EXPECT_FALSE(make_reward("format", {{"mode", "loose"}}).is_ok());
  EXPECT_EQ(make_reward("format", {{"mdoe", "strict"}}).status().message(),
            "reward 'format': unknown option 'mdoe'; did you mean 'mode'? (options: mode, answer_tags, prompt_opens_think)");
}

TEST(LanguageReward, ShareOfTargetLanguageWordsInTheThought) {
  EXPECT_DOUBLE_EQ(language_share("the cat sat", "en"), 1.0);
  EXPECT_DOUBLE_EQ(language_share("我们 compute 结果", "zh"), 4.0 / 5.0);   // 4 Han characters, 1 English word
  EXPECT_DOUBLE_EQ(language_share("let x = \\frac{a}{b} hence", "en"), 1.0);  // variables and LaTeX commands ignored
  EXPECT_DOUBLE_EQ(language_share("1 + 2 = 3", "en"), -1.0);
  EXPECT_DOUBLE_EQ(language_share("<answer>5</answer>", "zh"), -1.0);  // markup is not language
  const RewardScore mixed = score_with("language", {{"language", "en"}},
                                       sample_of("<think>first 先 then</think><answer>中文答案</answer>"));
  EXPECT_DOUBLE_EQ(mixed.score, 2.0 / 3.0);  // the answer is not part of the chain of thought
  EXPECT_EQ(score_with("language", {}, sample_of("<think>日本語です</think>", {{"language", "ja"}})).score, 1.0);
  EXPECT_FALSE(make_reward("language", {{"language", "klingon"}}).is_ok());
}

TEST(LengthReward, DapoOverlongPenalty) {
  auto reward = make_reward("length", {{"max_tokens", 100}, {"buffer", 20}});
  ASSERT_TRUE(reward.is_ok());
  RewardSample s = sample_of("x");
  for (const auto& [tokens, want] : std::vector<std::pair<int, double>>{{50, 0.0}, {80, 0.0}, {90, -0.5}, {100, -1.0}, {150, -1.0}}) {
    s.completion_tokens = tokens;
    EXPECT_DOUBLE_EQ((*reward)->score(s).score, want) << tokens;
  }
  s.completion_tokens = -1;
  EXPECT_THROW((*reward)->score(s), std::runtime_error);
  EXPECT_FALSE(make_reward("length", {{"max_tokens", 10}, {"buffer", 20}}).is_ok());
}

// A reward that fails or hangs on demand, to test the scorer's policies.
class TroubleReward final : public Reward {
 public:
  RewardScore score(const RewardSample& sample) const override {
    if (sample.completion == "throw") throw std::runtime_error("boom");
    if (sample.completion == "hang") std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    return RewardScore{0.5, {{"part", 2.0}}, "fine"};
  }
};

TEST(RewardSet, WeightedTotalsErrorsAndTimeouts) {
  register_reward("trouble", [](const nlohmann::json&) -> StatusOr<std::unique_ptr<Reward>> {
    return std::unique_ptr<Reward>(std::make_unique<TroubleReward>());
  });
  StatusOr<RewardSet> set = RewardSet::create({{"trouble", "", 2.0, nlohmann::json::object()},
                                               {"format", "fmt", 0.5, {{"mode", "lenient"}}}});
  ASSERT_TRUE(set.is_ok()) << set.status().message();
  ThreadPool pool(2);
  RewardConfig policy;
  policy.timeout_s = 0.5;
  policy.on_error = RewardErrorPolicy::kScore;
  policy.error_score = -1.0;
  std::vector<RewardSample> samples{sample_of("<think>a</think><answer>b</answer>"), sample_of("throw"), sample_of("hang")};
  samples[1].id = "bad-sample";
  ScoringStats stats;
  const auto scores = set->score(samples, policy, pool, &stats);
  EXPECT_DOUBLE_EQ(scores[0].total, 2.0 * 0.5 + 0.5 * 1.0);
  EXPECT_DOUBLE_EQ(scores[0].components.at("trouble.part"), 2.0);
  EXPECT_DOUBLE_EQ(scores[1].rewards.at("trouble"), -1.0);
  ASSERT_EQ(scores[1].errors.size(), 1u);
  EXPECT_EQ(scores[1].errors[0], "reward 'trouble' failed on sample 'bad-sample': boom");
  EXPECT_EQ(stats.errors, 2);
  EXPECT_EQ(stats.timeouts, 1);

  policy.on_error = RewardErrorPolicy::kFail;
  try {
    set->score({samples[1]}, policy, pool);
    ADD_FAILURE() << "expected the batch to fail";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "reward 'trouble' failed on sample 'bad-sample': boom");
  }
  EXPECT_EQ(RewardSet::create({{"nope", "", 1.0, {}}}).status().message(),
            "reward.functions[0]: unknown reward 'nope'; did you mean 'code'? (registered: code, format, language, "
            "length, math, plugin, subprocess, trouble)");
}

TEST(Plugins, SharedLibraryReward) {
  auto reward = make_reward("plugin", {{"path", GRPO_PLUGIN_PATH}, {"options", {{"keyword", "42"}}}});
  ASSERT_TRUE(reward.is_ok()) << reward.status().message();
  const RewardScore s = (*reward)->score(sample_of("42 and 42"));
  EXPECT_EQ(s.score, 1.0);
  EXPECT_EQ(s.components.at("hits"), 2.0);
  EXPECT_EQ((*reward)->score(sample_of("nothing")).score, 0.0);
  EXPECT_NE(make_reward("plugin", {{"path", GRPO_PLUGIN_PATH}}).status().message().find("option 'keyword'"), std::string::npos);
  EXPECT_NE(make_reward("plugin", {{"path", "/nonexistent.so"}}).status().message().find("/nonexistent.so"), std::string::npos);
}

TEST(Plugins, SubprocessRewardAndItsFailures) {
  const std::string script = std::string(GRPO_SOURCE_DIR) + "/examples/subprocess_reward.py";
  auto reward = make_reward("subprocess", {{"command", {"python3", script}}, {"timeout_s", 5.0}});
  ASSERT_TRUE(reward.is_ok()) << reward.status().message();
  const RewardScore s = (*reward)->score(sample_of("the result is 7", {{"expected", "7"}}));
  EXPECT_EQ(s.score, 1.0);
  EXPECT_EQ(s.components.at("chars"), 15.0);
  EXPECT_EQ((*reward)->score(sample_of("no", {{"expected", "7"}})).score, 0.0);
  try {
    (*reward)->score(sample_of("x"));
    ADD_FAILURE() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("has no field 'expected'"), std::string::npos) << e.what();
  }
  // A program that dies is an error naming it, and the next sample restarts it.
  auto crashing = make_reward("subprocess", {{"command", {"sh", "-c", "read line; echo oops >&2; exit 3"}}, {"name", "crasher"}});
  ASSERT_TRUE(crashing.is_ok());
  try {
    (*crashing)->score(sample_of("x"));
    ADD_FAILURE() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("subprocess reward 'crasher': it exited (code 3)"), std::string::npos) << "message: " << e.what();
  }
  // Protocol 2: a reply must echo its request's request_id.
  auto unnumbered = make_reward("subprocess", {{"command", {"sh", "-c", "while read line; do echo '{\"score\": 1}'; done"}},
                                               {"name", "unnumbered"}});
  ASSERT_TRUE(unnumbered.is_ok());
  try {
    (*unnumbered)->score(sample_of("x"));
    ADD_FAILURE() << "a reply without request_id was accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("subprocess reward 'unnumbered': reply to request 1 (sample 's1') carries request_id none"),
              std::string::npos) << e.what();
  }
  auto slow = make_reward("subprocess", {{"command", {"sh", "-c", "read line; sleep 5"}}, {"timeout_s", 0.3}});
  ASSERT_TRUE(slow.is_ok());
  EXPECT_THROW((*slow)->score(sample_of("x")), std::runtime_error);
}

// Scores what the completion says: "nan", "inf", "-inf" or 1.
class NonFiniteReward final : public Reward {
 public:
  RewardScore score(const RewardSample& sample) const override {
    if (sample.completion == "nan") return RewardScore{std::nan(""), {}, ""};
    if (sample.completion == "inf") return RewardScore{std::numeric_limits<double>::infinity(), {}, ""};
    if (sample.completion == "-inf") return RewardScore{-std::numeric_limits<double>::infinity(), {}, ""};
    return RewardScore{1.0, {}, "fine"};
  }
};

TEST(RewardSet, NonFiniteScoresAreCountedErrorsNeverValues) {
  register_reward("nonfinite", [](const nlohmann::json&) -> StatusOr<std::unique_ptr<Reward>> {
    return std::unique_ptr<Reward>(std::make_unique<NonFiniteReward>());
  });
  StatusOr<RewardSet> set = RewardSet::create({{"nonfinite", "", 1.0, nlohmann::json::object()}});
  ASSERT_TRUE(set.is_ok()) << set.status().message();
  ThreadPool pool(2);
  RewardConfig policy;
  policy.on_error = RewardErrorPolicy::kScore;
  policy.error_score = -0.5;
  std::vector<RewardSample> samples{sample_of("nan"), sample_of("fine"), sample_of("inf"), sample_of("-inf")};
  samples[0].id = "the-nan";
  ScoringStats stats;
  const auto scores = set->score(samples, policy, pool, &stats);
  EXPECT_EQ(stats.errors, 3);
  EXPECT_EQ(stats.timeouts, 0);
  EXPECT_DOUBLE_EQ(scores[1].total, 1.0);
  for (size_t i : {0u, 2u, 3u}) {
    EXPECT_DOUBLE_EQ(scores[i].total, -0.5) << i;
    ASSERT_EQ(scores[i].errors.size(), 1u) << i;
  }
  EXPECT_EQ(scores[0].errors[0], "reward 'nonfinite' failed on sample 'the-nan': non-finite score nan");

  policy.on_error = RewardErrorPolicy::kFail;
  EXPECT_THROW(set->score({samples[2]}, policy, pool), std::runtime_error);
}

// The same holds for rewards scored a batch at a time (reward models).
class NonFiniteBatchReward final : public Reward {
 public:
  RewardScore score(const RewardSample&) const override { return RewardScore{1.0, {}, ""}; }
  bool scores_batches() const override { return true; }
  std::vector<RewardScore> score_batch(const std::vector<RewardSample>& samples) const override {
    std::vector<RewardScore> out;
    for (const RewardSample& s : samples) out.push_back(RewardScore{s.completion == "nan" ? std::nan("") : 1.0, {}, ""});
    return out;
  }
};

TEST(RewardSet, NonFiniteBatchScoresAreErrorsToo) {
  register_reward("nonfinite_batch", [](const nlohmann::json&) -> StatusOr<std::unique_ptr<Reward>> {
    return std::unique_ptr<Reward>(std::make_unique<NonFiniteBatchReward>());
  });
  StatusOr<RewardSet> set = RewardSet::create({{"nonfinite_batch", "", 1.0, nlohmann::json::object()}});
  ASSERT_TRUE(set.is_ok()) << set.status().message();
  ThreadPool pool(1);
  RewardConfig policy;
  policy.on_error = RewardErrorPolicy::kScore;
  policy.error_score = -0.5;
  ScoringStats stats;
  const auto scores = set->score({sample_of("fine"), sample_of("nan")}, policy, pool, &stats);
  EXPECT_EQ(stats.errors, 1);
  EXPECT_DOUBLE_EQ(scores[0].total, 1.0);
  EXPECT_DOUBLE_EQ(scores[1].total, -0.5);
}

TEST(MathReward, DeclaresTheGoldAnswerFieldItNeeds) {
  auto math = make_reward("math", {{"answer_field", "solution"}});
  ASSERT_TRUE(math.is_ok());
  EXPECT_EQ((*math)->missing_fields({{"solution", "4"}}), std::vector<std::string>{});
  for (const nlohmann::json& fields : {nlohmann::json::object(), nlohmann::json{{"solution", nullptr}},
                                       nlohmann::json{{"solution", ""}}})
    EXPECT_EQ((*math)->missing_fields(fields), std::vector<std::string>{"solution"}) << fields.dump();
  EXPECT_THROW((*math)->score(sample_of("\\boxed{4}", {{"solution", ""}})), std::runtime_error);
}

TEST(CodeReward, DeclaresTheTestFieldsItNeeds) {
  auto code = make_reward("code", nlohmann::json::object());
  ASSERT_TRUE(code.is_ok()) << code.status().message();
  EXPECT_EQ((*code)->missing_fields({{"test", "def check(f): assert f() == 1"}, {"entry_point", "f"}}), std::vector<std::string>{});
  EXPECT_EQ((*code)->missing_fields({{"test_list", {"assert f() == 1"}}}), std::vector<std::string>{});
  for (const nlohmann::json& fields : {nlohmann::json::object(), nlohmann::json{{"test", "x"}},
                                       nlohmann::json{{"test_list", nlohmann::json::array()}}})
    EXPECT_EQ((*code)->missing_fields(fields).size(), 1u) << fields.dump();
}

// A C-ABI plugin that hangs, calls exit(0) or crashes costs an error naming it and the sample,
// within its timeout; the calling process lives on and the next sample is scored.
TEST(Plugins, SharedLibraryThatHangsExitsOrCrashesIsContained) {
  auto reward = make_reward("plugin", {{"path", GRPO_HOSTILE_PLUGIN_PATH}, {"timeout_s", 1.0}});
  ASSERT_TRUE(reward.is_ok()) << reward.status().message();
  EXPECT_EQ((*reward)->score(sample_of("fine")).score, 0.5);
  const std::string name = std::string("plugin hostile (") + GRPO_HOSTILE_PLUGIN_PATH + ")";
  const std::pair<const char*, const char*> cases[] = {
      {"hang", "no reply within 1 s (timeout_s); its worker was killed"},
      {"exit", "its worker exited with code 0 (a plugin must return from score, not exit)"},
      {"crash", "its worker crashed with signal 11"},
  };
  for (const auto& [completion, why] : cases) {
    RewardSample sample = sample_of(completion);
    sample.id = std::string("sample-") + completion;
    const auto start = std::chrono::steady_clock::now();
    try {
      (*reward)->score(sample);
      ADD_FAILURE() << completion << ": expected an error";
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find(name + " on sample 'sample-" + completion + "': " + why), std::string::npos)
          << e.what();
    }
    EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 5.0) << completion;
    EXPECT_EQ((*reward)->score(sample_of("fine")).score, 0.5) << "after " << completion;
  }
  // Through the scorer: errors counted and scored per on_error, the batch finishes.
  StatusOr<RewardSet> set = RewardSet::create({{"plugin", "hostile", 1.0, {{"path", GRPO_HOSTILE_PLUGIN_PATH}, {"timeout_s", 1.0}}}});
  ASSERT_TRUE(set.is_ok()) << set.status().message();
  ThreadPool pool(2);
  RewardConfig policy;
  policy.timeout_s = 5;
  policy.on_error = RewardErrorPolicy::kScore;
  policy.error_score = -1.0;
  ScoringStats stats;
  const auto scores = set->score({sample_of("hang"), sample_of("exit"), sample_of("fine"), sample_of("crash")}, policy, pool, &stats);
  EXPECT_EQ(stats.errors, 3);
  EXPECT_DOUBLE_EQ(scores[0].total, -1.0);
  EXPECT_DOUBLE_EQ(scores[2].total, 0.5);
  EXPECT_DOUBLE_EQ(scores[3].total, -1.0);
}

// A program that writes two replies per request: every later reply would belong to an earlier
// sample. The id check turns that into an error naming the program, never a shifted score.
TEST(Plugins, SubprocessRewardRejectsRepliesShiftedOntoTheWrongSample) {
  const std::string doubler =
      "import json, sys\n"
      "for line in sys.stdin:\n"
      "    r = json.loads(line)\n"
      "    for _ in range(2):\n"
      "        print(json.dumps({'request_id': r['request_id'], 'score': len(r['completion'])}), flush=True)\n";
  auto reward = make_reward("subprocess", {{"command", {"python3", "-c", doubler}}, {"name", "doubler"}, {"timeout_s", 5.0}});
  ASSERT_TRUE(reward.is_ok()) << reward.status().message();
  EXPECT_EQ((*reward)->score(sample_of("a")).score, 1.0);
  RewardSample second = sample_of("bbb");
  second.id = "s2";
  try {
    const RewardScore shifted = (*reward)->score(second);
    ADD_FAILURE() << "sample s2 got the reply meant for s1: score " << shifted.score;
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("subprocess reward 'doubler': reply to request 2 (sample 's2') carries request_id 1"),
              std::string::npos) << e.what();
  }
  // The program was restarted: the next sample is scored from a clean stream.
  EXPECT_EQ((*reward)->score(sample_of("cccc")).score, 4.0);
}

}  // namespace
}  // namespace grpo
