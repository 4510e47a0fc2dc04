// HumanEval (GRPO_HUMANEVAL, default ../shared/data/humaneval/HumanEval.jsonl): every canonical
// solution passes in the sandbox; the same with one line mutated fails.

#include "rewards/code_reward.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>

#include "core/jsonl.h"
#include "rewards/sandbox.h"
#include "tests/support/fixtures.h"

namespace grpo {
namespace {

std::string humaneval_path() { return testing::shared_path("GRPO_HUMANEVAL", "data/humaneval/HumanEval.jsonl"); }

// Replaces the first statement of the body with one that returns a wrong value.
std::string mutate_first_line(const std::string& body) {
  const size_t start = body.find_first_not_of("\n");
  const size_t end = body.find('\n', start);
  const std::string line = body.substr(start, end - start);
  const std::string indent = line.substr(0, line.find_first_not_of(" \t"));
  return body.substr(0, start) + indent + "return '__mutated__'" + (end == std::string::npos ? "" : body.substr(end));
}

TEST(CodeReward, HumanEvalCanonicalSolutionsPassAndMutantsFail) {
  if (Status s = sandbox_available(); !s.is_ok()) GTEST_SKIP() << s.message();
  StatusOr<JsonlRecords> problems = read_jsonl(humaneval_path());
  ASSERT_TRUE(problems.is_ok()) << problems.status().message();
  auto reward = make_reward("code", {{"timeout_s", 10.0}});
  ASSERT_TRUE(reward.is_ok()) << reward.status().message();
  int passed = 0, mutants_failed = 0;
  for (const auto& p : problems->records) {
    RewardSample sample;
    sample.id = p["task_id"];
    sample.fields = p;
    sample.completion = p["canonical_solution"];
    const RewardScore good = (*reward)->score(sample);
    if (good.score == 1.0) ++passed;
    else ADD_FAILURE() << sample.id << " canonical solution failed: " << good.reason;
    sample.completion = mutate_first_line(p["canonical_solution"]);
    const RewardScore bad = (*reward)->score(sample);
    if (bad.score == 0.0) ++mutants_failed;
    else ADD_FAILURE() << sample.id << " mutated solution passed";
  }
  EXPECT_EQ(passed, static_cast<int>(problems->records.size()));
  EXPECT_EQ(mutants_failed, static_cast<int>(problems->records.size()));
  std::printf("HumanEval: %d/%zu canonical solutions pass, %d/%zu mutants fail\n", passed, problems->records.size(),
              mutants_failed, problems->records.size());
}

std::string mbpp_path() { return testing::shared_path("GRPO_MBPP", "data/mbpp/mbpp.jsonl"); }

// MBPP's own records (code + test_list + test_setup_code): every reference solution passes every
// assert, each assert run on its own.
TEST(CodeReward, MbppReferenceSolutionsPass) {
  if (Status s = sandbox_available(); !s.is_ok()) GTEST_SKIP() << s.message();
  StatusOr<JsonlRecords> problems = read_jsonl(mbpp_path());
  ASSERT_TRUE(problems.is_ok()) << problems.status().message();
  // A generous wall clock: some references take seconds, and the machine may be shared.
  auto reward = make_reward("code", {{"timeout_s", 60.0}});
  ASSERT_TRUE(reward.is_ok());
  int passed = 0;
  for (const auto& p : problems->records) {
    RewardSample sample;
    sample.id = p["task_id"].dump();
    sample.fields = p;
    sample.completion = p["code"];
    const RewardScore score = (*reward)->score(sample);
    if (score.score == 1.0) ++passed;
    else ADD_FAILURE() << "MBPP " << sample.id << ": " << score.reason;
  }
  EXPECT_EQ(passed, static_cast<int>(problems->records.size()));
}

TEST(CodeReward, MbppAssertsScoreAShareAndStdioTestsCompareOutput) {
  if (Status s = sandbox_available(); !s.is_ok()) GTEST_SKIP() << s.message();
  auto reward = make_reward("code", nlohmann::json::object());
  ASSERT_TRUE(reward.is_ok());
  RewardSample mbpp;
  mbpp.fields = {{"test_list", {"assert add(1, 2) == 3", "assert add(2, 2) == 5", "assert add(0, 0) == 0"}},
                 {"test_setup_code", ""}};
  mbpp.completion = "Here you go:\n```python\ndef add(a, b):\n    return a + b\n```\n";
  EXPECT_NEAR((*reward)->score(mbpp).score, 2.0 / 3.0, 1e-12);

  RewardSample stdio;
  stdio.fields = {{"tests", {{{"input", "3 4\n"}, {"output", "7\n"}}, {{"input", "10 -2"}, {"output", "8"}}}}};
  stdio.completion = "```python\na, b = map(int, input().split())\nprint(a + b)\n```";
  EXPECT_EQ((*reward)->score(stdio).score, 1.0);

  auto cpp = make_reward("code", {{"language", "cpp"}, {"all_or_nothing", true}});
  ASSERT_TRUE(cpp.is_ok());
  stdio.completion = "```cpp\n#include <iostream>\nint main(){long a,b;std::cin>>a>>b;std::cout<<a+b<<\"\\n\";}\n```";
  EXPECT_EQ((*cpp)->score(stdio).score, 1.0);
  stdio.completion = "```cpp\n#include <iostream>\nint main(){long a,b;std::cin>>a>>b;std::cout<<a*b<<\"\\n\";}\n```";
  EXPECT_EQ((*cpp)->score(stdio).score, 0.0);
}

TEST(CodeReward, ExtractsTheLastTaggedBlock) {
  EXPECT_EQ(extract_code("x\n```\nplain\n```\n```python\nreal\n```\n"), "real\n");
  EXPECT_EQ(extract_code("<think>hmm</think>print(1)"), "print(1)");
}

}  // namespace
}  // namespace grpo
