// The collective watchdog (trainer.collective_timeout_s) under mpirun: when one rank of a 2-rank
// GRPO run is stopped with SIGSTOP, the other waits in its next collective only until the
// deadline, then logs what it waited in and aborts the job, which exits non-zero promptly
// instead of hanging forever.

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>

#include "tests/support/processes.h"

namespace grpo {
namespace {

namespace fs = std::filesystem;
using testing::find_process_with_env;
using Clock = std::chrono::steady_clock;

std::string read_file(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

TEST(CollectiveWatchdog, AStoppedRankEndsTheJobWithinTheTimeout) {
  const fs::path dir = fs::temp_directory_path() / ("grpo_watchdog_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::ofstream(dir / "grpo.yaml") << "model: {path: \"builtin:demo-qwen2\"}\n"
                                      "data: {train_path: \"builtin:addition?n=64&digits=1-3&seed=5\"}\n"
                                      "rollout: {max_new_tokens: 8}\n"
                                      "reward: {functions: [{name: language, options: {language: en}}]}\n"
                                      "grpo: {group_size: 2}\n"
                                      "trainer: {steps: 100000, prompts_per_step: 2, threads: 1, "
                                      "collective_timeout_s: 10}\n"
                                      "checkpoint: {every_steps: 0, resume: none}\n";
  const std::string tag = "GRPO_WATCHDOG_TEST=" + std::to_string(::getpid());
  const std::string command = tag + " exec timeout 120 " + GRPO_MPIEXEC + " --allow-run-as-root --oversubscribe -np 2 " +
                              GRPO_BINARY + " train --config " + (dir / "grpo.yaml").string() + " trainer.run_dir=" +
                              (dir / "run").string() + " > " + (dir / "log").string() + " 2>&1";
  const pid_t job = ::fork();
  if (job == 0) {
    ::execl("/bin/sh", "sh", "-c", command.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  // Stop rank 1 once both ranks are in the training loop (the first step's metrics are written).
  const fs::path metrics = dir / "run" / "metrics.jsonl";
  const auto started = Clock::now();
  while (!(fs::exists(metrics) && fs::file_size(metrics) > 0) && Clock::now() - started < std::chrono::seconds(90)) {
    ASSERT_NE(::waitpid(job, nullptr, WNOHANG), job) << "the job ended before its first step:\n" << read_file(dir / "log");
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  const pid_t rank1 = find_process_with_env({tag, "OMPI_COMM_WORLD_RANK=1"});
  ASSERT_GT(rank1, 0) << read_file(dir / "log");
  ASSERT_EQ(::kill(rank1, SIGSTOP), 0);
  const auto stopped = Clock::now();

  int status = 0;
  bool ended = false;
  while (Clock::now() - stopped < std::chrono::seconds(60)) {
    if (::waitpid(job, &status, WNOHANG) == job) {
      ended = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - stopped).count();
  if (!ended) {  // leave nothing behind on failure
    ::kill(rank1, SIGCONT);
    ::kill(rank1, SIGKILL);
    ::kill(job, SIGKILL);
    ::waitpid(job, &status, 0);
  }
  const std::string log = read_file(dir / "log");
  ASSERT_TRUE(ended) << "still running 60 s after SIGSTOP:\n" << log;
  EXPECT_LT(seconds, 30.0) << log;
  EXPECT_GE(seconds, 9.0) << "ended before the timeout:\n" << log;
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) != 0) << log;
  EXPECT_NE(log.find("collective watchdog: rank 0 of 2 waited"), std::string::npos) << log;
  EXPECT_NE(log.find("trainer.collective_timeout_s = 10 s"), std::string::npos) << log;
  EXPECT_NE(log.find("among ranks 1"), std::string::npos) << log;
  EXPECT_EQ(find_process_with_env({tag, "OMPI_COMM_WORLD_RANK=1"}), -1) << "the stopped rank outlived the job";
  fs::remove_all(dir);
}

}  // namespace
}  // namespace grpo
