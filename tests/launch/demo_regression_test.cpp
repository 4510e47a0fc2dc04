// A shortened R1 demo under mpirun (2 ranks): SFT of the tiny Qwen2 on easy worked additions,
// then GRPO on 3-digit problems rewarded by accuracy and format. The reward must rise.

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "tests/support/run_command.h"

namespace {

namespace fs = std::filesystem;

int run(const std::string& command, std::string* output) {
  const grpo::testing::CommandResult result = grpo::testing::run_command("timeout 600 " + command);
  *output += result.output;
  return result.exit_code;
}

TEST(Demo, ShortenedRecipeRaisesReward) {
  const fs::path dir = fs::temp_directory_path() / ("grpo_demo_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  const std::string mpi = std::string(GRPO_MPIEXEC) + " --allow-run-as-root --oversubscribe -np 2 -x OMP_WAIT_POLICY=PASSIVE ";
  const std::string source = GRPO_SOURCE_DIR;
  std::string out;
  ASSERT_EQ(run(mpi + GRPO_BINARY + " sft --config " + source + "/configs/demo/sft.yaml" +
                    " 'data.train_path=builtin:addition?n=2000&digits=1-2&hard_digits=3-3&hard_fraction=0.2&seed=1'" +
                    " trainer.steps=300 checkpoint.every_steps=0 trainer.run_dir=" + (dir / "sft").string(),
                &out),
            0)
      << out;
  ASSERT_EQ(run(mpi + GRPO_BINARY + " train --config " + source + "/configs/demo/grpo.yaml model.path=" +
                    (dir / "sft" / "final").string() + " 'data.train_path=builtin:addition?n=5000&digits=3-3&seed=3'" +
                    " trainer.steps=100 rollout.temperature=0.8 checkpoint.every_steps=0 trainer.run_dir=" +
                    (dir / "grpo").string(),
                &out),
            0)
      << out;
  std::vector<double> accuracy, reward;
  std::ifstream in(dir / "grpo" / "metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    const auto m = nlohmann::json::parse(line);
    accuracy.push_back(m["accuracy"]);
    reward.push_back(m["reward"]);
  }
  ASSERT_EQ(accuracy.size(), 100u);
  auto mean = [](const std::vector<double>& v, size_t from, size_t to) {
    double s = 0;
    for (size_t i = from; i < to; ++i) s += v[i];
    return s / static_cast<double>(to - from);
  };
  std::printf("demo regression: accuracy %.3f -> %.3f, reward %.3f -> %.3f (first 20 vs last 40 steps)\n",
              mean(accuracy, 0, 20), mean(accuracy, 60, 100), mean(reward, 0, 20), mean(reward, 60, 100));
  EXPECT_GT(mean(reward, 60, 100), mean(reward, 0, 20) + 0.03);
  EXPECT_GT(mean(accuracy, 60, 100), mean(accuracy, 0, 20) + 0.03);
  EXPECT_TRUE(fs::exists(dir / "grpo" / "samples.jsonl"));
  EXPECT_TRUE(fs::exists(dir / "grpo" / "tensorboard"));
  EXPECT_TRUE(fs::exists(dir / "grpo" / "config.yaml"));
  fs::remove_all(dir);
}

}  // namespace
