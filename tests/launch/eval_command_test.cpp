// `grpo eval` as the pipeline and a user run it: configs/eval/r1.yaml, as written from the
// repository root, on the tiny demo model (a few problems of each of the five sets, a few tokens:
// it solves nothing, so the passes are counted in eval_sets_test with known solutions). Checks the
// results JSON's stable keys (docs/training.md), that each set is judged by its own rewards
// (math, or code in the sandbox), and that a failed run exits non-zero leaving no results file.

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/support/run_command.h"

namespace grpo {
namespace {

namespace fs = std::filesystem;

const fs::path kWork = fs::temp_directory_path() / ("grpo_eval_command_" + std::to_string(::getpid()));

class RemoveWorkDirectory : public ::testing::Environment {
  void TearDown() override { fs::remove_all(kWork); }
};
const auto* const kCleanUp = ::testing::AddGlobalTestEnvironment(new RemoveWorkDirectory);

testing::CommandResult run_eval(const std::string& arguments, int ranks = 1) {
  const std::string launcher =
      ranks == 1 ? "" : testing::mpi_launcher(ranks);
  return testing::run_command("cd " + std::string(GRPO_SOURCE_DIR) + " && timeout 300 " + launcher +
                              std::string(GRPO_BINARY) + " eval --config configs/eval/r1.yaml model.path=builtin:demo-qwen2 " +
                              arguments);
}

std::vector<std::string> words(const std::string& line) {
  std::istringstream in(line);
  std::vector<std::string> out;
  for (std::string word; in >> word;) out.push_back(word);
  return out;
}

// `grpo eval`'s per-set table as printed: the header's column names and each set's row.
struct EvalTable {
  std::vector<std::string> header;
  std::map<std::string, std::vector<std::string>> rows;  // set name -> its row's cells

  std::string cell(const std::string& set, const std::string& column) const {
    const auto at = std::find(header.begin(), header.end(), column);
    if (at == header.end() || !rows.count(set)) return "(none)";
    return rows.at(set)[static_cast<size_t>(at - header.begin())];
  }
};

EvalTable parse_eval_table(const std::string& output) {
  EvalTable table;
  std::istringstream lines(output);
  for (std::string line; std::getline(lines, line);) {
    const std::vector<std::string> cells = words(line);
    if (!cells.empty() && cells[0] == "dataset") table.header = cells;
    else if (!table.header.empty() && cells.size() == table.header.size()) table.rows[cells[0]] = cells;
  }
  return table;
}

// The printed per-set table against the results JSON: every column names a key of each set's
// entry, and every row shows that key's value to the printed precision. A column the JSON lacks, or
// a set without a row, fails.
void expect_table_matches_results(const EvalTable& table, const nlohmann::json& results, int64_t k) {
  const std::map<std::string, std::string> key_of_column{
      {"problems", "problem_count"}, {"pass@1", "pass@1"}, {"pass@" + std::to_string(k), "pass@k"},
      {"cons@" + std::to_string(k), "cons@k"}, {"format", "format_ok"}, {"tokens", "mean_response_tokens"},
      {"errors", "reward_errors"}, {"seconds", "seconds"}};
  const std::vector<std::string>& header = table.header;
  ASSERT_GE(header.size(), 2u) << "no table header";
  for (const nlohmann::json& set : results["datasets"]) {
    const std::string name = set["name"];
    SCOPED_TRACE(name);
    ASSERT_TRUE(table.rows.count(name)) << "no table row";
    for (size_t column = 1; column < header.size(); ++column) {
      const auto key = key_of_column.find(header[column]);
      ASSERT_NE(key, key_of_column.end()) << "column '" << header[column] << "' is no key of the results JSON";
      ASSERT_TRUE(set.contains(key->second)) << key->second;
      const std::string& cell = table.rows.at(name)[column];
      const size_t point = cell.find('.');
      const int decimals = point == std::string::npos ? 0 : static_cast<int>(cell.size() - point - 1);
      EXPECT_NEAR(std::stod(cell), set[key->second].get<double>(), 0.5 * std::pow(10.0, -decimals) + 1e-9)
          << header[column];
    }
  }
}

TEST(EvalCommand, R1ConfigScoresEverySetWithItsRewards) {
  if (!fs::exists(std::string(GRPO_SOURCE_DIR) + "/../shared/data/humaneval/HumanEval.jsonl"))
    GTEST_SKIP() << "../shared/data is not next to the repository";
  const fs::path output = kWork / "r1.json";
  // AIME's prompts are longer than the demo model's 512 positions: this one has 2,048.
  const testing::CommandResult run =
      run_eval("'model.path=builtin:demo-qwen2?context=2048' eval.max_problems=2 eval.samples=2 eval.max_new_tokens=6 "
               "reward.threads=2 eval.output=" + output.string());
  if (run.output.find("sandbox") != std::string::npos && run.exit_code != 0) GTEST_SKIP() << run.output;
  ASSERT_EQ(run.exit_code, 0) << run.output;
  for (const char* name : {"gsm8k", "math500", "aime2024", "humaneval", "mbpp"})
    EXPECT_NE(run.output.find(name), std::string::npos) << run.output;

  nlohmann::json results = nlohmann::json::parse(std::ifstream(output));  // not const: a missing key reads as null
  EXPECT_EQ(results["schema"], 2);
  EXPECT_EQ(results["samples_per_problem"], 2);
  EXPECT_EQ(results["max_new_tokens"], 6);
  EXPECT_DOUBLE_EQ(results["temperature"].get<double>(), 0.6);
  EXPECT_DOUBLE_EQ(results["top_p"].get<double>(), 0.95);
  ASSERT_EQ(results["datasets"].size(), 5u);
  for (nlohmann::json& set : results["datasets"]) {
    const std::string name = set["name"];
    SCOPED_TRACE(name);
    const std::string reward = name == "humaneval" || name == "mbpp" ? "code" : "math";
    EXPECT_EQ(set["problem_count"], 2);
    ASSERT_EQ(set["problems"].size(), 2u);
    EXPECT_EQ(set["samples"], 2);
    EXPECT_EQ(set["rewards"].size(), 1u);
    EXPECT_TRUE(set["rewards"].contains(reward)) << set["rewards"].dump();
    EXPECT_EQ(set["correct_rule"].get<std::string>().rfind(reward + " ", 0), 0u) << set["correct_rule"];
    EXPECT_EQ(set["reward_errors"], 0);
    double correct = 0;
    for (const nlohmann::json& row : set["problems"]) correct += row["correct"].get<double>();
    EXPECT_NEAR(set["pass@1"].get<double>(), correct / 4.0, 1e-12);
    EXPECT_EQ(set["pass@k"], set["pass@2"]);
    EXPECT_EQ(set["cons@k"], set["cons@2"]);
    EXPECT_EQ(set["pass_at"]["1"], set["pass@1"]);
    EXPECT_EQ(set["pass_at"]["2"], set["pass@k"]);
    for (const char* key : {"dataset", "format_ok", "mean_response_tokens", "seconds"}) EXPECT_TRUE(set.contains(key)) << key;
  }
  expect_table_matches_results(parse_eval_table(run.output), results, 2);
}

// The pipeline's contract: exit 0 only with a complete results file; a failed run leaves none,
// not even an earlier run's.
TEST(EvalCommand, FailedRunExitsNonZeroAndLeavesNoResults) {
  fs::create_directories(kWork);
  const fs::path output = kWork / "stale.json";
  std::ofstream(output) << "{\"datasets\": []}\n";
  const testing::CommandResult run =
      run_eval("'eval.datasets=[{name: gone, path: /nonexistent/test.jsonl}]' eval.output=" + output.string());
  EXPECT_NE(run.exit_code, 0) << run.output;
  EXPECT_NE(run.output.find("eval.datasets[0].path"), std::string::npos) << run.output;
  EXPECT_FALSE(fs::exists(output));
}

// A generation that could run past the model's context (builtin:demo-qwen2 has 512 positions) is
// refused before any sampling, naming the set, the record and the key to lower.
TEST(EvalCommand, GenerationPastTheContextIsRefusedUpFront) {
  fs::create_directories(kWork);
  std::ofstream(kWork / "sums.jsonl") << "{\"prompt\": \"What is 20 + 22? Answer with the number only.\", \"answer\": \"42\"}\n";
  const fs::path output = kWork / "overlong.json";
  const testing::CommandResult run =
      run_eval("'eval.datasets=[{name: sums, path: " + (kWork / "sums.jsonl").string() +
               "}]' eval.samples=1 eval.max_new_tokens=500 eval.output=" + output.string());
  EXPECT_NE(run.exit_code, 0) << run.output;
  EXPECT_NE(run.output.find("eval set 'sums'"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("lower eval.max_new_tokens"), std::string::npos) << run.output;
  EXPECT_FALSE(fs::exists(output));
}

}  // namespace
}  // namespace grpo

namespace grpo {
namespace {

// A plugin reward decides a set end to end: examples/subprocess_reward.py scores 1 when the
// completion contains the record's `expected` text, which "" always is and a text the byte model
// cannot write never is. By hand: pass@1 = pass@2 = 2/4; cons@2 = 2/4 (the vote goes to the first
// sample, correct exactly on the "" problems). The math grader would find no answers: 0.
TEST(EvalCommand, SubprocessPluginDecidesCorrectness) {
  fs::create_directories(kWork);
  {
    std::ofstream data(kWork / "plugin.jsonl");
    for (const char* expected : {"", "\\u0001never", "", "\\u0001never"})
      data << "{\"prompt\": \"Say anything.\", \"expected\": \"" << expected << "\"}\n";
  }
  const fs::path output = kWork / "plugin.json";
  const testing::CommandResult run = run_eval(
      "'eval.datasets=[{name: plugin, path: " + (kWork / "plugin.jsonl").string() +
      ", rewards: [{name: subprocess, label: contains, options: {command: [python3, examples/subprocess_reward.py]}}]}]' "
      "eval.samples=2 eval.max_new_tokens=6 eval.output=" + output.string());
  ASSERT_EQ(run.exit_code, 0) << run.output;
  const nlohmann::json set = nlohmann::json::parse(std::ifstream(output))["datasets"].at(0);
  EXPECT_EQ(set["correct_rule"], "weighted total >= 1");
  EXPECT_DOUBLE_EQ(set["pass@1"].get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(set["pass@k"].get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(set["cons@k"].get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(set["rewards"]["contains"].get<double>(), 0.5);
}

// Two sets, one whose plugin reward fails on the records without an `expected` field (2 of 3,
// counted under reward.on_error: score): reward_errors is 2 x k = 4 there and 0 in the other, in
// the JSON and in the table's errors column, whose every other cell is also the JSON's.
TEST(EvalCommand, TableShowsEverySetWithItsRewardErrorsAsTheJsonDoes) {
  fs::create_directories(kWork);
  std::ofstream(kWork / "some_fail.jsonl") << "{\"prompt\": \"Say a.\", \"expected\": \"\"}\n"
                                           << "{\"prompt\": \"Say b.\"}\n{\"prompt\": \"Say c.\"}\n";
  std::ofstream(kWork / "none_fail.jsonl") << "{\"prompt\": \"Say d.\", \"expected\": \"\"}\n";
  const std::string reward = ", rewards: [{name: subprocess, label: contains, "
                             "options: {command: [python3, examples/subprocess_reward.py]}}]}";
  const fs::path output = kWork / "errors.json";
  const testing::CommandResult run = run_eval(
      "'eval.datasets=[{name: some_fail, path: " + (kWork / "some_fail.jsonl").string() + reward +
      ", {name: none_fail, path: " + (kWork / "none_fail.jsonl").string() + reward +
      "]' reward.on_error=score eval.samples=2 eval.max_new_tokens=6 eval.output=" + output.string());
  ASSERT_EQ(run.exit_code, 0) << run.output;
  const nlohmann::json results = nlohmann::json::parse(std::ifstream(output));
  ASSERT_EQ(results["datasets"].size(), 2u);
  EXPECT_EQ(results["datasets"][0]["reward_errors"], 4);
  EXPECT_EQ(results["datasets"][1]["reward_errors"], 0);
  EXPECT_DOUBLE_EQ(results["datasets"][0]["pass@1"].get<double>(), 1.0 / 3.0);  // a failed reward never passes
  const EvalTable table = parse_eval_table(run.output);
  EXPECT_EQ(table.cell("some_fail", "errors"), "4") << run.output;
  EXPECT_EQ(table.cell("none_fail", "errors"), "0") << run.output;
  EXPECT_EQ(table.cell("some_fail", "pass@1"), "0.333") << run.output;
  expect_table_matches_results(table, results, 2);
}

// A reward model decides a set end to end: its sigmoid-normalized score lies in (0, 1), so every
// sample is correct at correct_threshold 0 and none at 1, whichever way the tiny model scores.
TEST(EvalCommand, RewardModelDecidesCorrectnessByItsThreshold) {
  const std::string model = std::string(GRPO_SOURCE_DIR) + "/../shared/fixtures/reward_models/qwen2-reward-tiny";
  if (!fs::exists(model)) GTEST_SKIP() << model << " is missing";
  const std::string rewards = "rewards: [{name: reward_model, options: {model: " + model +
                              ", tokenizer: \"builtin:bytes\", chat_template: none, normalize: sigmoid}}]";
  const std::string set = "path: \"builtin:addition?n=3&seed=5\", " + rewards;
  const fs::path output = kWork / "reward_model.json";
  const testing::CommandResult run =
      run_eval("'eval.datasets=[{name: all, correct_threshold: 0.0, " + set + "}, {name: none, correct_threshold: 1.0, "
               "correct_rewards: [reward_model], " + set + "}]' eval.samples=2 eval.max_new_tokens=6 eval.output=" +
               output.string());
  ASSERT_EQ(run.exit_code, 0) << run.output;
  const nlohmann::json sets = nlohmann::json::parse(std::ifstream(output))["datasets"];
  EXPECT_DOUBLE_EQ(sets[0]["pass@1"].get<double>(), 1.0);
  EXPECT_DOUBLE_EQ(sets[1]["pass@1"].get<double>(), 0.0);
  const double mean = sets[0]["rewards"]["reward_model"].get<double>();
  EXPECT_GT(mean, 0.0);
  EXPECT_LT(mean, 1.0);
  EXPECT_EQ(sets[1]["correct_rule"].get<std::string>().rfind("reward_model ", 0), 0u) << sets[1]["correct_rule"];
}

// Problems are split over ranks (3 problems: 1 on rank 0, 2 on rank 1), every sum reduced and
// every problem's row gathered: 2 ranks report what 1 rank does, row by row (each problem's samples
// are seeded by its index, not by the rank that draws them).
TEST(EvalCommand, TwoRanksReportWhatOneRankDoes) {
  if (!fs::exists(std::string(GRPO_SOURCE_DIR) + "/../shared/data/gsm8k/test.jsonl"))
    GTEST_SKIP() << "../shared/data is not next to the repository";
  const std::string sets =
      "'eval.datasets=[{name: gsm8k, path: ../shared/data/gsm8k/test.jsonl, prompt_field: question}, "
      "{name: humaneval, path: ../shared/data/humaneval/HumanEval.jsonl, rewards: [{name: code}, {name: format}]}]' "
      "eval.max_problems=3 eval.samples=3 eval.max_new_tokens=6 reward.threads=1 eval.temperature=1.0 eval.output=";
  const testing::CommandResult one = run_eval(sets + (kWork / "one.json").string());
  ASSERT_EQ(one.exit_code, 0) << one.output;
  const testing::CommandResult two = run_eval(sets + (kWork / "two.json").string(), 2);
  ASSERT_EQ(two.exit_code, 0) << two.output;
  // Not const: a missing key reads as null and fails the comparison instead of asserting.
  nlohmann::json a = nlohmann::json::parse(std::ifstream(kWork / "one.json"));
  nlohmann::json b = nlohmann::json::parse(std::ifstream(kWork / "two.json"));
  ASSERT_EQ(a["datasets"].size(), 2u);
  ASSERT_EQ(b["datasets"].size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    SCOPED_TRACE(a["datasets"][i]["name"].get<std::string>());
    for (const char* key : {"problem_count", "pass@1", "pass@k", "cons@k", "pass_at", "rewards", "format_ok",
                            "mean_response_tokens"})
      EXPECT_EQ(a["datasets"][i][key], b["datasets"][i][key]) << key;
    EXPECT_EQ(a["datasets"][i]["problem_count"], 3);
    for (nlohmann::json* results : {&a, &b}) {
      const nlohmann::json& rows = (*results)["datasets"][i]["problems"];
      ASSERT_TRUE(rows.is_array()) << rows.dump();
      ASSERT_EQ(rows.size(), 3u) << rows.dump();
    }
    for (size_t row = 0; row < 3; ++row)
      for (const char* key : {"id", "correct", "majority", "votes", "gold"})
        EXPECT_EQ(a["datasets"][i]["problems"][row][key], b["datasets"][i]["problems"][row][key])
            << "row " << row << " " << key;
  }
  // Rows in dataset order: HumanEval's records are HumanEval/0, /1, /2 in its file.
  for (size_t row = 0; row < 3; ++row)
    EXPECT_EQ(b["datasets"][1]["problems"][row]["id"], "HumanEval/" + std::to_string(row));
  EXPECT_GT(a["datasets"][0]["mean_response_tokens"].get<double>(), 0.0);
  EXPECT_EQ(b["datasets"][1]["rewards"].size(), 2u);  // code and format
}

// Every problem's row, from every rank, in the set's order: 7 problems split 3 + 4 over 2 ranks
// give the rows 1 rank gives, field by field. The plugin reward (correct when the completion holds
// the record's one character) makes the correct counts differ between problems, so equal rows say
// the same samples were drawn and judged, not merely that nothing was solved.
TEST(EvalCommand, TwoRanksWriteEveryProblemsRowAsOneRankDoes) {
  fs::create_directories(kWork);
  const std::vector<std::string> expected{"a", "e", " ", "0", "\\u0001", "x", "t"};
  {
    std::ofstream data(kWork / "rows.jsonl");
    for (size_t i = 0; i < expected.size(); ++i)
      data << "{\"id\": \"p" << i << "\", \"prompt\": \"Say anything " << i << ".\", \"expected\": \"" << expected[i]
           << "\"}\n";
  }
  const std::string arguments =
      "'eval.datasets=[{name: rows, path: " + (kWork / "rows.jsonl").string() +
      ", rewards: [{name: subprocess, label: contains, "
      "options: {command: [python3, examples/subprocess_reward.py]}}]}]' "
      "eval.samples=4 eval.max_new_tokens=40 eval.temperature=1.0 eval.output=";
  const testing::CommandResult one = run_eval(arguments + (kWork / "rows_one.json").string());
  ASSERT_EQ(one.exit_code, 0) << one.output;
  const testing::CommandResult two = run_eval(arguments + (kWork / "rows_two.json").string(), 2);
  ASSERT_EQ(two.exit_code, 0) << two.output;
  nlohmann::json a = nlohmann::json::parse(std::ifstream(kWork / "rows_one.json"))["datasets"].at(0);
  nlohmann::json b = nlohmann::json::parse(std::ifstream(kWork / "rows_two.json"))["datasets"].at(0);
  for (nlohmann::json* set : {&a, &b}) {
    EXPECT_EQ((*set)["problem_count"], 7);
    ASSERT_TRUE((*set)["problems"].is_array()) << (*set)["problems"].dump();
    ASSERT_EQ((*set)["problems"].size(), expected.size()) << (*set)["problems"].dump();
    double correct = 0;
    for (size_t i = 0; i < expected.size(); ++i) {
      EXPECT_EQ((*set)["problems"][i]["id"], "p" + std::to_string(i));  // the file's order
      correct += (*set)["problems"][i]["correct"].get<double>();
    }
    EXPECT_NEAR((*set)["pass@1"].get<double>(), correct / (7.0 * 4.0), 1e-12);
  }
  std::set<int64_t> distinct_counts;
  for (size_t i = 0; i < expected.size(); ++i) {
    for (const char* key : {"id", "correct", "majority", "votes", "gold"})
      EXPECT_EQ(a["problems"][i][key], b["problems"][i][key]) << "row " << i << " " << key;
    distinct_counts.insert(a["problems"][i]["correct"].get<int64_t>());
  }
  EXPECT_GE(distinct_counts.size(), 2u) << "every problem has the same correct count: the comparison proves little";
}

}  // namespace
}  // namespace grpo
