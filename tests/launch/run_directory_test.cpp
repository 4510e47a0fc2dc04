// A run directory as users meet it (issue 9, items 1-5), with the real binary: one run at a time
// (a second is refused on every rank, naming the holder), no silent mixing with an earlier run,
// every step logged once after a resume, persistent write failures stop the run, and changed
// settings on resume are named.

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/support/run_command.h"

namespace grpo {
namespace {

namespace fs = std::filesystem;

const fs::path kWork = fs::temp_directory_path() / ("grpo_run_dir_" + std::to_string(::getpid()));

const char* kSft =
    "model: {path: \"builtin:demo-qwen2\"}\n"
    "data: {train_path: \"builtin:addition?n=64&digits=1-3&seed=5\"}\n"
    "optimizer: {lr: 1.0e-3}\n"
    "trainer: {steps: 4, prompts_per_step: 4, seed: 3, threads: 1}\n"
    "checkpoint: {every_steps: 1, keep_last: 2}\n";
const char* kGrpo =
    "model: {path: \"builtin:demo-qwen2\"}\n"
    "data: {train_path: \"builtin:addition?n=64&digits=1-3&seed=5\"}\n"
    "rollout: {max_new_tokens: 8, temperature: 1.0}\n"
    "reward: {functions: [{name: language, options: {language: en, empty_score: 0.0}}]}\n"
    "grpo: {group_size: 2}\n"
    "optimizer: {lr: 1.0e-3}\n"
    "trainer: {steps: 4, prompts_per_step: 2, seed: 3, threads: 1}\n"
    "checkpoint: {every_steps: 2, keep_last: 3}\n";

std::string config_file(const std::string& name, const char* body) {
  fs::create_directories(kWork);
  const fs::path path = kWork / name;
  std::ofstream(path) << body;
  return path.string();
}

testing::CommandResult grpo(const std::string& args) {
  return testing::run_command("timeout 120 " + std::string(GRPO_BINARY) + " " + args);
}
testing::CommandResult grpo_on_ranks(int ranks, const std::string& args) {
  return testing::run_command("timeout 120 " + testing::mpi_launcher(ranks) + GRPO_BINARY + " " + args);
}

std::vector<int64_t> steps_in(const fs::path& jsonl) {
  std::vector<int64_t> steps;
  std::ifstream in(jsonl);
  for (std::string line; std::getline(in, line);) steps.push_back(nlohmann::json::parse(line).at("step").get<int64_t>());
  return steps;
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// Issue 9.2: two runs in one directory both finished, interleaving metrics.jsonl.
TEST(RunDirectory, ASecondRunIsRefusedWhileTheFirstHoldsTheLock) {
  const std::string config = config_file("lock.yaml", kSft);
  const fs::path dir = kWork / "locked";
  const pid_t first = ::fork();
  if (first == 0) {
    const int quiet = ::open("/dev/null", O_WRONLY);
    ::dup2(quiet, 1);
    ::dup2(quiet, 2);
    ::execl(GRPO_BINARY, GRPO_BINARY, "sft", "--config", config.c_str(), ("trainer.run_dir=" + dir.string()).c_str(),
            "trainer.steps=100000", "checkpoint.every_steps=0", "trainer.max_seconds=100", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  struct KillOnExit {
    pid_t pid;
    ~KillOnExit() {
      if (pid <= 0) return;
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  } first_guard{first};
  // Once the first run logs its first step it is surely under way (and holds the lock).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline && !(fs::exists(dir / "metrics.jsonl") && fs::file_size(dir / "metrics.jsonl") > 0))
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_TRUE(fs::exists(dir / "metrics.jsonl")) << "the first run did not start";
  std::ifstream lock_file(dir / ".lock");
  const std::string holder((std::istreambuf_iterator<char>(lock_file)), std::istreambuf_iterator<char>());
  EXPECT_TRUE(contains(holder, "pid " + std::to_string(first) + " on host ")) << holder;

  const std::string second_args = "sft --config " + config + " trainer.run_dir=" + dir.string() + " trainer.steps=1";
  const testing::CommandResult one = grpo(second_args);
  EXPECT_EQ(one.exit_code, 1) << one.output;
  EXPECT_TRUE(contains(one.output, "'" + dir.string() + "' is in use by pid " + std::to_string(first))) << one.output;
  EXPECT_LT(one.seconds, 30);
  // On two ranks every rank ends, promptly, and no rank waits for rank 0.
  const testing::CommandResult two = grpo_on_ranks(2, second_args);
  EXPECT_NE(two.exit_code, 0) << two.output;
  EXPECT_TRUE(contains(two.output, "is in use by pid " + std::to_string(first))) << two.output;
  EXPECT_LT(two.seconds, 60);
  EXPECT_FALSE(fs::exists(dir / "final")) << "the refused run trained";

  // kill -9 leaves no stale lock: the next run starts at once.
  ::kill(first, SIGKILL);
  ::waitpid(first, nullptr, 0);
  first_guard.pid = -1;
  const testing::CommandResult after = grpo(second_args + " --resume auto");
  EXPECT_EQ(after.exit_code, 0) << after.output;
  fs::remove_all(dir);
}

// Issue 9.2: a plain start in a directory with checkpoints resumed (or mixed) silently.
TEST(RunDirectory, AFreshStartOverCheckpointsNeedsResumeOrOverwrite) {
  const std::string config = config_file("fresh.yaml", kSft);
  const fs::path dir = kWork / "fresh";
  const std::string args = "sft --config " + config + " trainer.run_dir=" + dir.string();
  testing::CommandResult r = grpo(args + " trainer.steps=2");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (int ranks : {1, 2}) {
    r = ranks == 1 ? grpo(args) : grpo_on_ranks(2, args);
    EXPECT_EQ(r.exit_code, 2) << r.output;
    for (const char* advice : {"already holds checkpoints", "--resume auto", "--overwrite", "step-2"})
      EXPECT_TRUE(contains(r.output, advice)) << advice << "\n" << r.output;
    EXPECT_EQ(steps_in(dir / "metrics.jsonl"), (std::vector<int64_t>{1, 2})) << "the refused run wrote metrics";
  }
  r = grpo(args + " --overwrite --resume auto");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  r = grpo(args + " --overwrite trainer.steps=3");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(steps_in(dir / "metrics.jsonl"), (std::vector<int64_t>{1, 2, 3}));
  EXPECT_FALSE(contains(r.output, "resumed from")) << r.output;
  fs::remove_all(dir);
}

// Issue 9.1: with a higher-numbered (here corrupt) checkpoint in the directory, retention removed
// every new checkpoint right after writing it.
TEST(RunDirectory, NewCheckpointsSurviveALaterNumberedOne) {
  const std::string config = config_file("retention.yaml", kSft);
  const fs::path dir = kWork / "retention";
  fs::create_directories(dir / "checkpoints" / "step-50");
  std::ofstream(dir / "checkpoints" / "step-50" / "model.safetensors") << "partial";
  const testing::CommandResult r = grpo("sft --config " + config + " trainer.run_dir=" + dir.string() + " --resume auto");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(fs::exists(dir / "checkpoints" / "step-4" / "manifest.json")) << r.output;
  EXPECT_TRUE(fs::exists(dir / "checkpoints" / "step-3" / "manifest.json")) << r.output;
  EXPECT_FALSE(fs::exists(dir / "checkpoints" / "step-50")) << "a later resume would pick it";
  EXPECT_TRUE(contains(r.output, "set aside")) << r.output;
  fs::remove_all(dir);
}

// Issue 9.3 and 9.5: resuming from an earlier checkpoint logs each step once, and changed
// settings are named with both values.
TEST(RunDirectory, ResumeLogsEveryStepOnceAndNamesChangedSettings) {
  const std::string config = config_file("resume.yaml", kGrpo);
  const fs::path dir = kWork / "resume";
  const std::string args = "train --config " + config + " trainer.run_dir=" + dir.string();
  testing::CommandResult r = grpo(args);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  ASSERT_EQ(steps_in(dir / "metrics.jsonl"), (std::vector<int64_t>{1, 2, 3, 4}));
  r = grpo(args + " --resume " + (dir / "checkpoints" / "step-2").string() + " optimizer.lr=2.0e-3");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(steps_in(dir / "metrics.jsonl"), (std::vector<int64_t>{1, 2, 3, 4}));
  EXPECT_EQ(steps_in(dir / "samples.jsonl"), (std::vector<int64_t>{1, 1, 2, 2, 3, 3, 4, 4}));
  EXPECT_TRUE(contains(r.output, "optimizer.lr: 0.001 -> 0.002")) << r.output;
  r = grpo(args + " --resume auto trainer.steps=5 optimizer.lr=2.0e-3");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_FALSE(contains(r.output, "changed setting")) << r.output;  // trainer.steps is not an essential
  fs::remove_all(dir);
}

// Issue 9.4: with the disk full, metrics.jsonl stayed empty and the run ended with exit 0.
TEST(RunDirectory, PersistentlyFailingMetricsWritesStopTheRun) {
  if (!fs::exists("/dev/full")) GTEST_SKIP() << "no /dev/full";
  const std::string config = config_file("full.yaml", kSft);
  const fs::path dir = kWork / "full";
  fs::create_directories(dir);
  fs::create_symlink("/dev/full", dir / "metrics.jsonl");  // every write fails with ENOSPC
  const testing::CommandResult r =
      grpo("sft --config " + config + " trainer.run_dir=" + dir.string() + " trainer.steps=10 checkpoint.every_steps=0");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "WARN")) << r.output;
  EXPECT_TRUE(contains(r.output, "metrics.jsonl: No space left on device")) << r.output;
  EXPECT_FALSE(fs::exists(dir / "final")) << r.output;
  fs::remove_all(dir);
}

}  // namespace
}  // namespace grpo
