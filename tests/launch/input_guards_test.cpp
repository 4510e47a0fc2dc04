// `grpo train` and `grpo generate` as a user runs them on bad input or a run that cannot learn:
// each stops with exit 1 or 2 and one message naming the file:line, the lengths or the guard,
// before any model work where the problem is in the data.

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "tests/support/run_command.h"

namespace grpo {
namespace {

namespace fs = std::filesystem;

const fs::path kWork = fs::temp_directory_path() / ("grpo_input_guards_" + std::to_string(::getpid()));

// The runs' files go when the test process ends.
class RemoveWorkDirectory : public ::testing::Environment {
  void TearDown() override { fs::remove_all(kWork); }
};
const auto* const kCleanUp = ::testing::AddGlobalTestEnvironment(new RemoveWorkDirectory);

testing::CommandResult run_grpo(const std::string& arguments) {
  return testing::run_command("timeout 300 " + std::string(GRPO_BINARY) + " " + arguments);
}

std::string write(const std::string& name, const std::string& contents) {
  fs::create_directories(kWork);
  std::ofstream(kWork / name) << contents;
  return (kWork / name).string();
}

// A tiny GRPO run on the demo model; `extra` is appended to the config.
std::string grpo_config(const std::string& name, const std::string& data, const std::string& rewards,
                        const std::string& extra = "") {
  return write(name, "model: {path: \"builtin:demo-qwen2\"}\n"
                     "data: {train_path: \"" + data + "\"}\n"
                     "rollout: {max_new_tokens: 16}\n"
                     "reward: {functions: [" + rewards + "]}\n"
                     "grpo: {group_size: 4}\n"
                     "trainer: {steps: 20, prompts_per_step: 2, threads: 1, run_dir: \"" + (kWork / name).string() +
                     ".run\"}\n"
                     "checkpoint: {every_steps: 0, resume: none}\n" + extra);
}

TEST(InputGuards, MissingGoldAnswerStopsTrainingAtLoadNamingFileAndLine) {
  const std::string data = write("no_gold.jsonl", "{\"prompt\": \"1+1=\", \"answer\": \"2\"}\n{\"prompt\": \"2+2=\"}\n");
  const std::string config = grpo_config("no_gold.yaml", data, "{name: math}");
  const auto run = run_grpo("train --config " + config);
  EXPECT_EQ(run.exit_code, 1) << run.output;
  EXPECT_NE(run.output.find(data + ":2: reward 'math' needs field 'answer'"), std::string::npos) << run.output;
  EXPECT_FALSE(fs::exists(config + ".run/metrics.jsonl") && fs::file_size(config + ".run/metrics.jsonl") > 0)
      << "a step ran before the data was checked";
}

TEST(InputGuards, PromptBeyondTheModelContextStopsTrainingOrIsSkipped) {
  // The demo model has 512 positions and reads one token per byte.
  const std::string data = write("long.jsonl", "{\"prompt\": \"1+1=\"}\n{\"prompt\": \"" + std::string(600, '7') + "\"}\n");
  const std::string config = grpo_config("long.yaml", data, "{name: format}", "");
  const auto run = run_grpo("train --config " + config);
  EXPECT_EQ(run.exit_code, 1) << run.output;
  EXPECT_NE(run.output.find(data + ":2: prompt of "), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("exceeds the model's context of 512 tokens"), std::string::npos) << run.output;

  const auto skipped = run_grpo("train --config " + config + " data.overlong_prompts=skip trainer.steps=1");
  EXPECT_EQ(skipped.exit_code, 0) << skipped.output;
  EXPECT_NE(skipped.output.find("skipped 1 prompts of " + data), std::string::npos) << skipped.output;
}

TEST(InputGuards, AbsurdLearningRateStopsTheRunWithExit1) {
  const std::string config =
      grpo_config("lr.yaml", "builtin:addition?n=64&digits=1-2&seed=5", "{name: language, options: {language: en}}",
                  "optimizer: {lr: 1.0e+30}\n");
  const auto run = run_grpo("train --config " + config);
  EXPECT_EQ(run.exit_code, 1) << run.output;
  EXPECT_NE(run.output.find("optimizer updates were skipped for non-finite gradients"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("trainer.guards.max_skipped_update_fraction = 0.5"), std::string::npos) << run.output;
  EXPECT_FALSE(fs::exists(config + ".run/final")) << "a model that never trained was exported";
}

TEST(InputGuards, GenerateRefusesAPromptBeyondTheModelContext) {
  const std::string model = std::string(GRPO_SHARED_DIR) + "/fixtures/models/llama-tiny";  // 512 positions
  const auto run = run_grpo("generate --model " + model + " --tokenizer builtin:bytes --prompt " +
                            std::string(500, 'a') + " --max-new-tokens 20");
  EXPECT_EQ(run.exit_code, 2) << run.output;
  EXPECT_NE(run.output.find("--prompt #1: prompt of "), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("exceeds the model's context of 512 tokens"), std::string::npos) << run.output;
}

}  // namespace
}  // namespace grpo
