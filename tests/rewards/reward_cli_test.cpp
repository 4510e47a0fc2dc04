// `grpo reward` with a C-ABI plugin that hangs, calls exit(0) and crashes: the command returns
// within the plugin's timeout, every sample is in the output, and the failures are reported as
// reward errors naming the plugin and the sample (on_error: score), or fail the command (fail).

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/support/run_command.h"

namespace grpo {
namespace {

namespace fs = std::filesystem;

class RewardCli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("grpo_reward_cli_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    std::ofstream(dir_ / "in.jsonl") << R"({"id": "a", "completion": "fine"})" "\n"
                                        R"({"id": "b", "completion": "hang"})" "\n"
                                        R"({"id": "c", "completion": "exit"})" "\n"
                                        R"({"id": "d", "completion": "crash"})" "\n"
                                        R"({"id": "e", "completion": "fine"})" "\n";
  }
  void TearDown() override { fs::remove_all(dir_); }

  testing::CommandResult score(const std::string& on_error) {
    std::ofstream(dir_ / "config.yaml") << "reward:\n  functions:\n    - name: plugin\n      label: hostile\n"
                                           "      options: {path: " GRPO_HOSTILE_PLUGIN_PATH ", timeout_s: 1}\n"
                                           "  timeout_s: 5\n  on_error: " << on_error << "\n  error_score: -1\n";
    return testing::run_command("timeout 60 " GRPO_BINARY " reward --config " + (dir_ / "config.yaml").string() +
                                " --input " + (dir_ / "in.jsonl").string() + " --output " + (dir_ / "out.jsonl").string());
  }

  fs::path dir_;
};

TEST_F(RewardCli, HostilePluginCostsErrorsNotTheCommand) {
  const testing::CommandResult run = score("score");
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_LT(run.seconds, 30) << run.output;
  std::ifstream out(dir_ / "out.jsonl");
  std::vector<nlohmann::json> rows;
  for (std::string line; std::getline(out, line);) rows.push_back(nlohmann::json::parse(line));
  ASSERT_EQ(rows.size(), 5u) << run.output;
  const char* why[] = {"", "no reply within 1 s", "exited with code 0", "crashed with signal 11", ""};
  for (size_t i = 0; i < rows.size(); ++i) {
    const std::string id = rows[i]["id"];
    if (why[i][0] == '\0') {
      EXPECT_DOUBLE_EQ(rows[i]["reward"].get<double>(), 0.5) << id;
      EXPECT_TRUE(rows[i]["errors"].empty()) << id;
      continue;
    }
    EXPECT_DOUBLE_EQ(rows[i]["reward"].get<double>(), -1.0) << id;
    ASSERT_EQ(rows[i]["errors"].size(), 1u) << id;
    const std::string error = rows[i]["errors"][0];
    EXPECT_NE(error.find("plugin hostile ("), std::string::npos) << error;
    EXPECT_NE(error.find("on sample '" + id + "'"), std::string::npos) << error;
    EXPECT_NE(error.find(why[i]), std::string::npos) << error;
  }
  EXPECT_NE(run.output.find("3 reward errors"), std::string::npos) << run.output;
}

TEST_F(RewardCli, HostilePluginWithOnErrorFailStopsWithTheSample) {
  const testing::CommandResult run = score("fail");
  EXPECT_EQ(run.exit_code, 1) << run.output;
  EXPECT_LT(run.seconds, 30) << run.output;
  EXPECT_NE(run.output.find("reward 'hostile' failed on sample 'b'"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("no reply within 1 s"), std::string::npos) << run.output;
}

}  // namespace
}  // namespace grpo
