// Evaluation during training (eval.every_steps, data.dev_path) and its early end
// (eval.stop_at_pass_at_1), with the real binary: evaluating leaves training exactly as it is, the
// numbers are those `grpo eval` gives the same weights, a reached target ends the run for good (a
// resume trains nothing, a raised target trains on), on 2 ranks at ZeRO stage 3 and with rollout
// ranks, and the keys are checked before any model work.

#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/support/run_command.h"

namespace grpo {
namespace {

namespace fs = std::filesystem;

const fs::path kWork = fs::temp_directory_path() / ("grpo_dev_eval_" + std::to_string(::getpid()));
const char* kDevSet = "builtin:addition?n=12&digits=1-2&seed=9";
const std::string kDevSetArg = std::string("'") + kDevSet + "'";  // quoted for the shell

const char* kSft =
    "model: {path: \"builtin:demo-qwen2\"}\n"
    "data: {train_path: \"builtin:addition?n=64&digits=1-3&seed=5\"}\n"
    "rollout: {max_new_tokens: 16}\n"
    "optimizer: {lr: 1.0e-3}\n"
    "trainer: {steps: 6, prompts_per_step: 4, seed: 3, threads: 1}\n"
    "eval: {samples: 2, temperature: 1.0, top_p: 1.0}\n"
    "checkpoint: {every_steps: 0, keep_last: 2}\n";
const char* kGrpo =
    "model: {path: \"builtin:demo-qwen2\"}\n"
    "data: {train_path: \"builtin:addition?n=64&digits=1-3&seed=5\"}\n"
    "rollout: {max_new_tokens: 12, temperature: 1.0}\n"
    "reward: {functions: [{name: math}, {name: format, weight: 0.1}]}\n"
    "grpo: {group_size: 2}\n"
    "optimizer: {lr: 1.0e-3}\n"
    "trainer: {steps: 4, prompts_per_step: 2, seed: 3, threads: 1}\n"
    "eval: {samples: 2, temperature: 1.0, top_p: 1.0}\n"
    "checkpoint: {every_steps: 0, keep_last: 2}\n";

std::string config_file(const std::string& name, const char* body) {
  fs::create_directories(kWork);
  const fs::path path = kWork / name;
  std::ofstream(path) << body;
  return path.string();
}

testing::CommandResult grpo_on_ranks(int ranks, const std::string& args) {
  const std::string launcher = ranks == 1 ? std::string() : testing::mpi_launcher(ranks);
  return testing::run_command("timeout 300 " + launcher + GRPO_BINARY + " " + args);
}

std::vector<nlohmann::json> rows_of(const fs::path& jsonl) {
  std::vector<nlohmann::json> rows;
  std::ifstream in(jsonl);
  for (std::string line; std::getline(in, line);) rows.push_back(nlohmann::json::parse(line));
  return rows;
}

// A metrics row without wall-clock fields (step_s, tokens_per_s, ...) and without the dev metrics.
nlohmann::json training_part(nlohmann::json row) {
  for (auto it = row.begin(); it != row.end();) {
    const std::string& key = it.key();
    const bool timing = (key.size() > 2 && key.compare(key.size() - 2, 2, "_s") == 0) || key == "tokens_per_s" ||
                        key == "time";
    it = timing || key.rfind("dev/", 0) == 0 ? row.erase(it) : std::next(it);
  }
  return row;
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

std::string dev_keys(int every_steps) {
  return " eval.every_steps=" + std::to_string(every_steps) + " data.dev_path=" + kDevSetArg;
}

// Dev evaluations sample with their own seeds, so the run trains exactly as it would without them;
// and what they report is what `grpo eval` reports for the exported weights.
TEST(DevEvaluation, LeavesTrainingAsItIsAndReportsWhatGrpoEvalReports) {
  const std::string config = config_file("grpo.yaml", kGrpo);
  const fs::path plain = kWork / "plain", evaluated = kWork / "evaluated";
  testing::CommandResult r = grpo_on_ranks(2, "train --config " + config + " trainer.run_dir=" + plain.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = grpo_on_ranks(2, "train --config " + config + " trainer.run_dir=" + evaluated.string() + dev_keys(2));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "dev eval at step 2: pass@1")) << r.output;

  const std::vector<nlohmann::json> a = rows_of(plain / "metrics.jsonl"), b = rows_of(evaluated / "metrics.jsonl");
  ASSERT_EQ(a.size(), 4u);
  ASSERT_EQ(b.size(), 4u);
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(training_part(a[i]), training_part(b[i])) << "step " << i + 1;
    EXPECT_FALSE(a[i].contains("dev/pass@1"));
    EXPECT_EQ(b[i].contains("dev/pass@1"), (i + 1) % 2 == 0) << "step " << i + 1;
  }

  // The same weights (the final export), set, seed and sampling through `grpo eval` on one rank.
  r = grpo_on_ranks(1, "eval --config " + config + " model.path=" + (evaluated / "final").string() +
                           " data.eval_path=" + kDevSetArg + " trainer.run_dir=" + (kWork / "eval").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const nlohmann::json set = nlohmann::json::parse(std::ifstream(kWork / "eval" / "eval.json"))["datasets"][0];
  const nlohmann::json& last = b.back();
  EXPECT_DOUBLE_EQ(last["dev/pass@1"].get<double>(), set["pass@1"].get<double>());
  EXPECT_DOUBLE_EQ(last["dev/cons@k"].get<double>(), set["cons@k"].get<double>());
  EXPECT_DOUBLE_EQ(last["dev/format"].get<double>(), set["format_ok"].get<double>());
  EXPECT_DOUBLE_EQ(last["dev/response_tokens"].get<double>(), set["mean_response_tokens"].get<double>());
  EXPECT_GT(last["dev/response_tokens"].get<double>(), 0.0);
  fs::remove_all(kWork);
}

// A target of 0 is reached at the first evaluation: the run ends there for good, and goes on only
// when the target is raised. On 2 ranks at stage 3 the evaluation gathers the sharded policy.
TEST(DevEvaluation, AReachedTargetEndsTheRunAndAResumeKeepsItEnded) {
  const std::string config = config_file("sft.yaml", kSft);
  const fs::path dir = kWork / "stop";
  const std::string args = "sft --config " + config + " trainer.run_dir=" + dir.string() + " trainer.zero_stage=3" +
                           dev_keys(2);
  testing::CommandResult r = grpo_on_ranks(2, args + " eval.stop_at_pass_at_1=0");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "reached eval.stop_at_pass_at_1 0 at step 2")) << r.output;
  std::vector<nlohmann::json> rows = rows_of(dir / "metrics.jsonl");
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_TRUE(rows.back().contains("dev/pass@1"));
  EXPECT_TRUE(fs::exists(dir / "final" / "model.safetensors"));
  EXPECT_TRUE(fs::exists(dir / "checkpoints" / "step-2"));

  r = grpo_on_ranks(2, args + " eval.stop_at_pass_at_1=0 --resume auto");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "nothing left to train")) << r.output;
  EXPECT_EQ(rows_of(dir / "metrics.jsonl").size(), 2u);

  // An untrained model's pass@1 stays below 1 on this set, so the raised target trains to the end.
  r = grpo_on_ranks(2, args + " eval.stop_at_pass_at_1=1 --resume auto");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  rows = rows_of(dir / "metrics.jsonl");
  ASSERT_EQ(rows.size(), 6u);
  EXPECT_EQ(rows.back()["step"], 6);
  EXPECT_LT(rows.back()["dev/pass@1"].get<double>(), 1.0);
  fs::remove_all(kWork);
}

// eval.stop_consecutive 2: the second evaluation in a row at the target ends the run, and the count
// survives a resume (the first evaluation happened before it).
TEST(DevEvaluation, ConsecutiveEvaluationsAtTheTargetAreCountedAcrossAResume) {
  const std::string config = config_file("sft.yaml", kSft);
  const fs::path dir = kWork / "consecutive";
  const std::string args = "sft --config " + config + " trainer.run_dir=" + dir.string() + dev_keys(2) +
                           " eval.stop_at_pass_at_1=0 eval.stop_consecutive=2";
  testing::CommandResult r = grpo_on_ranks(1, args);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "at step 4 (2 evaluation(s) in a row)")) << r.output;
  EXPECT_EQ(rows_of(dir / "metrics.jsonl").size(), 4u);

  // Two steps (one evaluation), then a resume to six: the evaluation at step 4 is the second.
  const fs::path resumed = kWork / "consecutive-resumed";
  const std::string resumed_args = "sft --config " + config + " trainer.run_dir=" + resumed.string() + dev_keys(2) +
                                   " eval.stop_at_pass_at_1=0 eval.stop_consecutive=2";
  r = grpo_on_ranks(1, resumed_args + " trainer.steps=2");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = grpo_on_ranks(1, resumed_args + " --resume auto");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::vector<nlohmann::json> rows = rows_of(resumed / "metrics.jsonl");
  ASSERT_EQ(rows.size(), 4u);
  EXPECT_EQ(rows.back()["step"], 4);
  fs::remove_all(kWork);
}

// With rollout ranks the trainers evaluate and tell the rollout ranks that the run ended; a resume
// with nothing left to train tells them too (before, resuming a finished run left the rollout rank
// waiting for a batch request forever: the job never ended).
TEST(DevEvaluation, RolloutRanksEndWithTheTrainersAtTheTarget) {
  const std::string config = config_file("grpo.yaml", kGrpo);
  const fs::path dir = kWork / "disaggregated";
  const std::string args = "train --config " + config + " trainer.run_dir=" + dir.string() +
                           " trainer.rollout_ranks=1 trainer.prompts_per_step=2" + dev_keys(2) +
                           " eval.stop_at_pass_at_1=0";
  testing::CommandResult r = grpo_on_ranks(3, args);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(rows_of(dir / "metrics.jsonl").size(), 2u);
  r = grpo_on_ranks(3, args + " --resume auto");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "nothing left to train")) << r.output;
  EXPECT_EQ(rows_of(dir / "metrics.jsonl").size(), 2u);

  // The same for a run that trained all its steps (no target): resuming it ends at once.
  const fs::path whole = kWork / "disaggregated-whole";
  const std::string plain = "train --config " + config + " trainer.run_dir=" + whole.string() +
                            " trainer.rollout_ranks=1 trainer.prompts_per_step=2";
  r = grpo_on_ranks(3, plain);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = grpo_on_ranks(3, plain + " --resume auto");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(rows_of(whole / "metrics.jsonl").size(), 4u);
  fs::remove_all(kWork);
}

TEST(DevEvaluation, BadKeysAreRefusedBeforeAnyTraining) {
  const std::string config = config_file("sft.yaml", kSft);
  const fs::path dir = kWork / "refused";
  testing::CommandResult r =
      grpo_on_ranks(1, "sft --config " + config + " trainer.run_dir=" + dir.string() + " eval.stop_at_pass_at_1=0.5");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.output, "eval.stop_at_pass_at_1 0.5")) << r.output;
  EXPECT_TRUE(contains(r.output, "eval.every_steps")) << r.output;
  EXPECT_FALSE(fs::exists(dir / "metrics.jsonl"));

  r = grpo_on_ranks(1, "sft --config " + config + " trainer.run_dir=" + dir.string() +
                           " eval.every_steps=2 data.dev_path=" + (kWork / "missing.jsonl").string());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.output, "data.dev_path")) << r.output;
  EXPECT_FALSE(fs::exists(dir / "metrics.jsonl"));

  r = grpo_on_ranks(1, "sft --config " + config + " trainer.run_dir=" + dir.string() + " eval.every_steps=2");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.output, "set data.dev_path (or data.eval_path)")) << r.output;

  r = grpo_on_ranks(1, "sft --config " + config + " trainer.run_dir=" + dir.string() + " eval.stop_at_pass_at_1=1.5");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_TRUE(contains(r.output, "eval.stop_at_pass_at_1")) << r.output;
  fs::remove_all(kWork);
}

}  // namespace
}  // namespace grpo
