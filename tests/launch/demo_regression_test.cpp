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

  // `grpo eval` over two sets in one call, one of them a JSONL file with its own field names whose
  // gold answers the test computes itself; one process, so the JSON lists every problem.
  {
    std::ofstream custom(dir / "custom.jsonl");
    for (int a = 3; a < 60; a += 7) custom << nlohmann::json{{"q", std::to_string(a) + "+" + std::to_string(2 * a + 1) + "="}, {"gold", std::to_string(3 * a + 1)}}.dump() << "\n";
    std::ofstream(dir / "eval.yaml") << "model: {path: " << (dir / "grpo" / "final").string() << "}\n"
                                     << "rollout: {max_new_tokens: 72}\n"
                                     << "eval:\n  samples: 4\n  datasets:\n"
                                     << "    - {name: easy, path: \"builtin:addition?n=40&digits=1-2&seed=11\"}\n"
                                     << "    - {name: custom, path: " << (dir / "custom.jsonl").string()
                                     << ", prompt_field: q, answer_field: gold}\n";
  }
  std::string eval_out;
  ASSERT_EQ(run(std::string(GRPO_BINARY) + " eval --config " + (dir / "eval.yaml").string() + " eval.output=" +
                    (dir / "eval.json").string(),
                &eval_out),
            0)
      << eval_out;
  EXPECT_NE(eval_out.find("easy"), std::string::npos) << eval_out;
  EXPECT_NE(eval_out.find("custom"), std::string::npos) << eval_out;
  const auto results = nlohmann::json::parse(std::ifstream(dir / "eval.json"));
  ASSERT_EQ(results["datasets"].size(), 2u);
  const auto& easy = results["datasets"][0];
  const auto& custom = results["datasets"][1];
  EXPECT_EQ(easy["name"], "easy");
  EXPECT_EQ(easy["problems"], 40);
  EXPECT_EQ(custom["problems"], 9);
  for (const auto& set : {easy, custom}) {
    // pass@1 and cons@4 are what the per-problem rows say.
    double correct = 0, consensus = 0;
    for (const auto& p : set["rank0_problems"]) {
      correct += p["correct"].get<double>();
      consensus += p["majority"] == p["gold"] ? 1.0 : 0.0;
    }
    EXPECT_NEAR(set["pass@1"].get<double>(), correct / (4.0 * set["problems"].get<double>()), 1e-12) << set["name"];
    EXPECT_GE(set["cons@4"].get<double>(), consensus / set["problems"].get<double>() - 1e-12) << set["name"];
  }
  int row = 0;
  for (int a = 3; a < 60; a += 7, ++row) EXPECT_EQ(custom["rank0_problems"][row]["gold"], std::to_string(3 * a + 1));
  std::printf("demo regression eval: easy pass@1 %.3f, custom pass@1 %.3f\n", easy["pass@1"].get<double>(),
              custom["pass@1"].get<double>());
  EXPECT_GT(easy["pass@1"].get<double>(), 0.2);  // trained on 1-2 digit sums

  // A bad path in the second set fails before any model work, naming the key.
  const grpo::testing::CommandResult bad = grpo::testing::run_command(
      std::string(GRPO_BINARY) + " eval --config " + (dir / "eval.yaml").string() + " eval.output=" +
      (dir / "bad.json").string() + " 'eval.datasets=[{name: a, path: \"builtin:addition?n=2\"}, {name: b, path: /missing.jsonl}]'");
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.output.find("eval.datasets[1].path"), std::string::npos) << bad.output;
  fs::remove_all(dir);
}

}  // namespace
