// The disaggregated layout under mpirun (trainer.rollout_ranks, rollout.max_staleness): on-policy it
// trains what the colocated layout trains; the rollout ranks sample with the trainers' weights
// after every sync; one-step-off really lags by one version; a killed rollout rank ends the job
// within the collective timeout; a killed async run resumes without skipping or repeating prompts.

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "tests/support/processes.h"
#include "tests/support/run_command.h"
#include "tests/support/run_weights.h"

namespace grpo {
namespace {

namespace fs = std::filesystem;
using testing::find_process_with_env;
using testing::run_and_kill_when;
using Clock = std::chrono::steady_clock;
using testing::final_weights;
using testing::max_difference;

const fs::path kWork = fs::temp_directory_path() / ("grpo_async_" + std::to_string(::getpid()));

testing::CommandResult run(const std::string& command) { return testing::run_command("timeout 300 " + command); }

std::string read_file(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// A tiny GRPO recipe whose reward varies for an untrained model; AdamW with eps = 1 moves by about
// lr * gradient, so weight differences measure gradient differences (tests/mpi/distributed_test.cpp).
const char* kGrpo =
    "model: {path: \"builtin:demo-qwen2\"}\n"
    "data: {train_path: \"builtin:addition?n=64&digits=1-3&seed=5\"}\n"
    "rollout: {max_new_tokens: 20, temperature: 1.0}\n"
    "reward: {functions: [{name: language, options: {language: en, empty_score: 0.0}}]}\n"
    "grpo: {group_size: 4, kl: {beta: 0.01}}\n"
    "optimizer: {lr: 0.1, eps: 1.0}\n"
    "trainer: {steps: 3, prompts_per_step: 4, seed: 3, threads: 1}\n"
    "checkpoint: {every_steps: 0, resume: none}\n";

std::string write_config(const std::string& name, const std::string& body) {
  fs::create_directories(kWork);
  const fs::path path = kWork / name;
  std::ofstream(path) << body;
  return path.string();
}

std::map<int64_t, nlohmann::json> metrics_by_step(const fs::path& run_dir) {
  std::map<int64_t, nlohmann::json> out;
  std::ifstream in(run_dir / "metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    const nlohmann::json m = nlohmann::json::parse(line);
    const int64_t step = m["step"].get<int64_t>();
    EXPECT_EQ(out.count(step), 0u) << run_dir << ": step " << step << " logged twice";
    out[step] = m;
  }
  return out;
}

// The prompts logged in samples.jsonl, by step.
std::map<int64_t, std::vector<std::string>> prompts_by_step(const fs::path& run_dir) {
  std::map<int64_t, std::vector<std::string>> out;
  std::ifstream in(run_dir / "samples.jsonl");
  for (std::string line; std::getline(in, line);) {
    const nlohmann::json s = nlohmann::json::parse(line);
    out[s["step"].get<int64_t>()].push_back(s["prompt"].get<std::string>());
  }
  return out;
}

// Staleness 0 with 1 rollout rank + 2 trainer ranks samples the same completions (per-row seeds) and
// trains the same parameters as the colocated 2-rank run. The trainers' own log-probs of what the
// rollout rank sampled equal the sampler's, so the rollout rank held the trainers' weights after
// every sync (also with ZeRO-3 trainers). At staleness 1 the batches lag one version (and the
// log-probs differ accordingly).
TEST(AsyncRollout, OnPolicyMatchesColocatedAndOneStepOffLags) {
  const std::string config = write_config("grpo.yaml", kGrpo);
  const fs::path colocated = kWork / "colocated", on_policy = kWork / "on_policy", off_policy = kWork / "off_policy";
  auto r = run(testing::mpi_launcher(2) + GRPO_BINARY + " train --config " + config + " trainer.run_dir=" + colocated.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run(testing::mpi_launcher(3) + GRPO_BINARY + " train --config " + config + " trainer.rollout_ranks=1 trainer.run_dir=" +
          on_policy.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("2 trainer rank(s) (0-1) and 1 rollout rank(s) (2-2)"), std::string::npos) << r.output;
  EXPECT_LE(max_difference(final_weights(colocated), final_weights(on_policy)), 1e-6);

  const auto a = metrics_by_step(colocated), b = metrics_by_step(on_policy);
  ASSERT_EQ(a.size(), 3u);
  ASSERT_EQ(b.size(), 3u);
  for (const auto& [step, m] : a) {
    const nlohmann::json& async = b.at(step);
    for (const char* key : {"reward", "response_tokens", "data/position", "data/epoch", "policy_version"})
      EXPECT_EQ(m.at(key), async.at(key)) << key << " at step " << step;
    EXPECT_NEAR(m.at("loss").get<double>(), async.at("loss").get<double>(), 1e-6) << "step " << step;
    EXPECT_EQ(async.at("policy_version").get<double>(), static_cast<double>(step - 1));
    EXPECT_EQ(async.at("staleness").get<double>(), 0.0);
    EXPECT_LE(async.at("mismatch/logp_abs_max").get<double>(), 1e-5) << "step " << step;
    // The demo model's fp32 parameters, every step but the last (no sync after it).
    if (step < 3) {
      EXPECT_GT(async.at("weight_sync_mb").get<double>(), 0.1) << "step " << step;
    }
    EXPECT_GE(async.at("weight_sync_s").get<double>(), 0.0);
  }
  EXPECT_EQ(prompts_by_step(colocated), prompts_by_step(on_policy));

  // ZeRO-3 trainers send the weights from their shards for each sync (tests/mpi/weight_sync_test.cpp).
  const fs::path sharded = kWork / "on_policy_zero3";
  r = run(testing::mpi_launcher(3) + GRPO_BINARY + " train --config " + config + " trainer.rollout_ranks=1 trainer.zero_stage=3" +
          " trainer.run_dir=" + sharded.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_LE(max_difference(final_weights(colocated), final_weights(sharded)), 1e-5);
  for (const auto& [step, m] : metrics_by_step(sharded))
    EXPECT_LE(m.at("mismatch/logp_abs_max").get<double>(), 1e-5) << "stage 3, step " << step;

  r = run(testing::mpi_launcher(3) + GRPO_BINARY + " train --config " + config +
          " trainer.rollout_ranks=1 rollout.max_staleness=1 trainer.run_dir=" + off_policy.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto c = metrics_by_step(off_policy);
  ASSERT_EQ(c.size(), 3u);
  for (const auto& [step, m] : c) {
    const double lag = step == 1 ? 0.0 : 1.0;  // the first batch is sampled with the starting weights
    EXPECT_EQ(m.at("staleness").get<double>(), lag) << "step " << step;
    EXPECT_EQ(m.at("policy_version").get<double>(), static_cast<double>(step - 1) - lag) << "step " << step;
    EXPECT_EQ(m.at("data/position"), a.at(step).at("data/position")) << "step " << step;
    // Sampled by the weights one update older than the trainers': the log-probs differ.
    if (step > 1) {
      EXPECT_GT(m.at("mismatch/logp_abs_max").get<double>(), 1e-4) << "step " << step;
    }
  }
  EXPECT_EQ(prompts_by_step(colocated), prompts_by_step(off_policy));
  EXPECT_GT(max_difference(final_weights(colocated), final_weights(off_policy)), 1e-6);
}

// Completions of varied lengths and a length reward (tests/mpi/distributed_test.cpp): some groups
// score all alike, so dynamic sampling refills.
const char* kGrpoRefill =
    "model: {path: \"builtin:demo-qwen2\"}\n"
    "data: {train_path: \"builtin:addition?n=64&digits=1-3&seed=5\"}\n"
    "rollout: {max_new_tokens: 40, temperature: 1.0, stop: [\"0\", \"1\", \"2\", \"3\", \"4\", \"5\", \"6\", \"7\", "
    "\"8\", \"9\", \"a\", \"e\", \"i\", \"o\", \"u\", \"s\", \"t\", \"n\", \"r\", \"l\", \"A\", \"E\", \"I\", \"O\", \"S\", "
    "\"T\", \"N\", \"R\", \"L\", \"x\", \"y\", \"z\"]}\n"
    "reward: {functions: [{name: length, options: {max_tokens: 6, buffer: 1}}]}\n"
    "grpo: {filter_zero_std_groups: true, max_generation_rounds: 4, group_size: 4, kl: {beta: 0.01}}\n"
    "optimizer: {lr: 0.1, eps: 1.0}\n"
    "trainer: {steps: 4, prompts_per_step: 4, seed: 3, threads: 1}\n"
    "checkpoint: {every_steps: 0, resume: none}\n";

// Dynamic sampling on the rollout ranks (their votes over their own communicator): one trainer and
// one rollout rank train what one colocated rank trains, refill rounds and data cursor included.
TEST(AsyncRollout, DynamicSamplingOnTheRolloutRanksMatchesColocated) {
  const std::string config = write_config("grpo_refill.yaml", kGrpoRefill);
  const fs::path colocated = kWork / "refill_colocated", async = kWork / "refill_async";
  auto r = run(testing::mpi_launcher(1) + GRPO_BINARY + " train --config " + config + " trainer.run_dir=" + colocated.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run(testing::mpi_launcher(2) + GRPO_BINARY + " train --config " + config + " trainer.rollout_ranks=1 trainer.run_dir=" +
          async.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_LE(max_difference(final_weights(colocated), final_weights(async)), 1e-6);
  const auto a = metrics_by_step(colocated), b = metrics_by_step(async);
  ASSERT_EQ(b.size(), 4u);
  int refilled = 0;
  for (const auto& [step, m] : a) {
    for (const char* key : {"groups_generated", "groups_kept", "reward", "data/position", "reward_errors"})
      EXPECT_EQ(m.at(key), b.at(step).at(key)) << key << " at step " << step;
    if (m.at("groups_generated").get<double>() > 4) ++refilled;
  }
  EXPECT_GT(refilled, 0) << "no step refilled; the test does not exercise refill";
}

TEST(AsyncRollout, LayoutErrorsNameTheKey) {
  const std::string config = write_config("grpo_layout.yaml", kGrpo);
  auto r = run(testing::mpi_launcher(2) + GRPO_BINARY + " train --config " + config + " trainer.rollout_ranks=2 trainer.run_dir=" +
               (kWork / "layout_error").string());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("trainer.rollout_ranks = 2 needs at least one trainer rank"), std::string::npos) << r.output;
}

// Sends `signal` to the rollout rank (world rank 2) of a one-step-off run once its first step is
// logged; returns how long the job took to end after that (-1: still running after 60 s, then
// killed), its exit status, and its output.
struct Ending {
  double seconds = -1;
  int status = 0;
  std::string log;
};
Ending signal_rollout_rank(int signal, const std::string& name) {
  const fs::path dir = kWork / name;
  fs::create_directories(dir);
  std::string yaml = kGrpo;
  yaml.replace(yaml.find("steps: 3,"), 9, "steps: 100000, collective_timeout_s: 10, rollout_ranks: 1,");
  yaml.replace(yaml.find("temperature: 1.0}"), 17, "temperature: 1.0, max_staleness: 1}");
  const std::string config = write_config(name + ".yaml", yaml);
  const std::string tag = "GRPO_ASYNC_TEST=" + std::to_string(::getpid()) + name;
  const std::string command = tag + " exec timeout 120 " + testing::mpi_launcher(3) + GRPO_BINARY + " train --config " + config +
                              " trainer.run_dir=" + (dir / "run").string() + " > " + (dir / "log").string() + " 2>&1";
  Ending ending;
  const pid_t job = ::fork();
  if (job == 0) {
    ::execl("/bin/sh", "sh", "-c", command.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  const fs::path metrics = dir / "run" / "metrics.jsonl";
  const auto started = Clock::now();
  while (!(fs::exists(metrics) && fs::file_size(metrics) > 0) && Clock::now() - started < std::chrono::seconds(90)) {
    if (::waitpid(job, &ending.status, WNOHANG) == job) {
      ending.log = "the job ended before its first step:\n" + read_file(dir / "log");
      return ending;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  const pid_t rollout = find_process_with_env({tag, "OMPI_COMM_WORLD_RANK=2"});
  EXPECT_GT(rollout, 0) << read_file(dir / "log");
  if (rollout > 0) {
    EXPECT_EQ(::kill(rollout, signal), 0);
  }
  const auto signalled = Clock::now();
  bool ended = false;
  while (Clock::now() - signalled < std::chrono::seconds(60)) {
    if (::waitpid(job, &ending.status, WNOHANG) == job) {
      ended = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (ended) ending.seconds = std::chrono::duration<double>(Clock::now() - signalled).count();
  for (int rank = 0; rank < 3; ++rank) {  // leave nothing behind, and say whether anything was left
    const pid_t left = find_process_with_env({tag, "OMPI_COMM_WORLD_RANK=" + std::to_string(rank)});
    EXPECT_EQ(left, -1) << "rank " << rank << " outlived the job";
    if (left > 0) {
      ::kill(left, SIGCONT);
      ::kill(left, SIGKILL);
    }
  }
  if (!ended) {
    ::kill(job, SIGKILL);
    ::waitpid(job, &ending.status, 0);
  }
  ending.log = read_file(dir / "log");
  return ending;
}

// A rollout rank that dies (SIGKILL): the launcher ends every rank at once and names rank 2.
// One that hangs (SIGSTOP): the trainers wait for its batch only until trainer.collective_timeout_s,
// then the watchdog names the rank and what they waited for, and ends the job.
TEST(AsyncRollout, AKilledOrHungRolloutRankEndsTheJob) {
  const Ending killed = signal_rollout_rank(SIGKILL, "killed_rollout");
  ASSERT_GE(killed.seconds, 0) << "still running 60 s after the rollout rank was killed:\n" << killed.log;
  EXPECT_LT(killed.seconds, 30.0) << killed.log;
  EXPECT_TRUE(WIFEXITED(killed.status) && WEXITSTATUS(killed.status) != 0) << killed.log;
  EXPECT_NE(killed.log.find("process rank 2"), std::string::npos) << killed.log;

  const Ending hung = signal_rollout_rank(SIGSTOP, "hung_rollout");
  ASSERT_GE(hung.seconds, 0) << "still running 60 s after the rollout rank was stopped:\n" << hung.log;
  EXPECT_LT(hung.seconds, 30.0) << hung.log;
  EXPECT_GE(hung.seconds, 9.0) << "ended before the timeout:\n" << hung.log;
  EXPECT_TRUE(WIFEXITED(hung.status) && WEXITSTATUS(hung.status) != 0) << hung.log;
  EXPECT_NE(hung.log.find("trainer.collective_timeout_s = 10 s"), std::string::npos) << hung.log;
  // Whichever trainer's watch expires first ends the job: trainer 0 in the weights' broadcast to
  // rank 2, or trainer 1 in a gather of every rank.
  const size_t among = hung.log.find("the missing ones are among ranks ");
  ASSERT_NE(among, std::string::npos) << hung.log;
  const std::string missing = hung.log.substr(among, hung.log.find(" (MPI", among) - among);
  EXPECT_NE(missing.find("2"), std::string::npos) << hung.log;
  EXPECT_NE(hung.log.find("the rollout ranks 2-2"), std::string::npos) << hung.log;
}

// A one-step-off run killed with SIGKILL after its step-3 checkpoint (the rollout rank had already
// drawn step 4's prompts) resumes with step 4's prompts: every step's prompts and data cursor equal
// an uninterrupted run's, each step logged once.
TEST(AsyncRollout, KilledOneStepOffRunResumesWithoutSkippingOrRepeatingPrompts) {
  const std::string config = write_config("grpo_resume.yaml", kGrpo);
  const std::string common = testing::mpi_launcher(3) + GRPO_BINARY + " train --config " + config +
                             " trainer.rollout_ranks=1 rollout.max_staleness=1 trainer.steps=8 checkpoint.every_steps=3"
                             " trainer.run_dir=";
  const fs::path straight = kWork / "resume_straight", resumed = kWork / "resume_killed";
  auto r = run(common + straight.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  run_and_kill_when(common + resumed.string(), resumed / "checkpoints" / "step-3" / "manifest.json");
  EXPECT_FALSE(fs::exists(resumed / "final" / "model.safetensors")) << "the run finished before it was killed";
  r = run(common + resumed.string() + " --resume auto");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("resumed from"), std::string::npos) << r.output;
  const auto a = metrics_by_step(straight), b = metrics_by_step(resumed);
  ASSERT_EQ(a.size(), 8u);
  ASSERT_EQ(b.size(), 8u);
  for (const auto& [step, m] : a) {
    EXPECT_EQ(m.at("data/position"), b.at(step).at("data/position")) << "step " << step;
    EXPECT_EQ(m.at("data/epoch"), b.at(step).at("data/epoch")) << "step " << step;
  }
  // 64 examples, 4 prompts a step: positions 4, 8, ..., 32, one step's worth apart.
  EXPECT_EQ(b.at(8).at("data/position").get<double>(), 32.0);
  const auto pa = prompts_by_step(straight), pb = prompts_by_step(resumed);
  ASSERT_EQ(pa.size(), 8u);
  EXPECT_EQ(pa, pb);
  // The resumed run samples step 4 with the checkpoint's weights (version 3) and goes on one step off.
  EXPECT_EQ(b.at(4).at("staleness").get<double>(), 0.0);
  EXPECT_EQ(b.at(5).at("staleness").get<double>(), 1.0);
}

}  // namespace
}  // namespace grpo
