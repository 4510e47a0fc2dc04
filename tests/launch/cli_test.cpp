// Runs the real `grpo` binary as a user would and checks exit codes and messages.

#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>

#include <nlohmann/json.hpp>

#include "core/config.h"
#include "tests/support/run_command.h"

namespace grpo {
namespace {

using CliRun = testing::CommandResult;

CliRun run_grpo(const std::string& arguments) { return testing::run_command(std::string(GRPO_BINARY) + " " + arguments); }

std::string write_temp(const std::string& name, const std::string& contents) {
  const auto path = std::filesystem::temp_directory_path() / (std::to_string(::getpid()) + "_" + name);
  std::ofstream(path) << contents;
  return path.string();
}

TEST(Cli, HelpListsOnlyWorkingCommands) {
  const CliRun run = run_grpo("--help");
  EXPECT_EQ(run.exit_code, 0);
  for (const char* verb : {"config", "convert", "eval", "generate", "pipeline", "reward", "sample", "sft", "tokenize",
                           "toy", "train", "version"})
    EXPECT_NE(run.output.find("  " + std::string(verb) + " "), std::string::npos) << verb;
}

TEST(Cli, NoCommandOrUnknownCommandIsUsageError) {
  EXPECT_EQ(run_grpo("").exit_code, 2);
  const CliRun run = run_grpo("fly");
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_NE(run.output.find("unknown command 'fly'"), std::string::npos);
}

TEST(Cli, VerbHelpShowsUsage) {
  const CliRun run = run_grpo("config --help");
  EXPECT_EQ(run.exit_code, 0);
  EXPECT_NE(run.output.find("Usage: grpo config --config FILE"), std::string::npos) << run.output;
}

TEST(Cli, VersionNamesTorchAndMpi) {
  const CliRun run = run_grpo("version");
  EXPECT_EQ(run.exit_code, 0);
  EXPECT_NE(run.output.find("LibTorch 1."), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("MPI: "), std::string::npos);
  EXPECT_NE(run.output.find("CUDA: "), std::string::npos);
  EXPECT_NE(run.output.find("NCCL: "), std::string::npos);
}

// A mistyped switch must not leave the kernels silently off for a whole run.
TEST(Cli, CudaKernelsSwitchTakesOnlyZeroOrOne) {
  const CliRun bad = testing::run_command(std::string("GRPO_CUDA_KERNELS=yes ") + GRPO_BINARY + " config --reference");
  EXPECT_EQ(bad.exit_code, 2) << bad.output;
  EXPECT_NE(bad.output.find("GRPO_CUDA_KERNELS=yes: expected 0"), std::string::npos) << bad.output;
  for (const char* value : {"0", "1"}) {
    const CliRun run = testing::run_command(std::string("GRPO_CUDA_KERNELS=") + value + " " + GRPO_BINARY + " version");
    EXPECT_EQ(run.exit_code, 0) << value << "\n" << run.output;
    // With 1 the line says on where the kernels were compiled; a build without them warns instead.
    const bool compiled = run.output.find("CUDA kernels: compiled") != std::string::npos;
    if (std::string(value) == "1" && compiled) EXPECT_NE(run.output.find("CUDA kernels: compiled, on"), std::string::npos);
    if (std::string(value) == "1" && !compiled) EXPECT_NE(run.output.find("has no CUDA kernels"), std::string::npos);
    if (std::string(value) == "0") EXPECT_EQ(run.output.find("CUDA kernels: compiled, on"), std::string::npos);
  }
}

// OpenBLAS names the core it chose itself when OPENBLAS_VERBOSE=2 ("Core: Haswell"), the
// independent truth for what `grpo version` reports; "" when OpenBLAS is not loaded.
std::string core_openblas_announces(const std::string& output) {
  const auto at = output.find("Core: ");
  if (at == std::string::npos) return "";
  return output.substr(at + 6, output.find('\n', at) - at - 6);
}

TEST(Cli, VersionReportsTheBlasCoreOpenBlasChose) {
  const CliRun run = testing::run_command(std::string("OPENBLAS_VERBOSE=2 ") + GRPO_BINARY + " version");
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_NE(run.output.find("BLAS: "), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("intra-op threads: "), std::string::npos) << run.output;
  const std::string core = core_openblas_announces(run.output);
  if (core.empty()) GTEST_SKIP() << "OpenBLAS is not loaded here:\n" << run.output;
  EXPECT_NE(run.output.find("BLAS core: " + core + "\n"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("BLAS: OpenBLAS "), std::string::npos) << run.output;
}

// Forcing OpenBLAS's generic kernels in the child simulates the Intel machine where OpenBLAS 0.3.21
// did not know the CPU; the test's own environment stays as the machine set it.
TEST(Cli, GenericBlasCoreIsReportedAndWarnedAboutOnAnAvx2Cpu) {
  if (run_grpo("version").output.find("BLAS: OpenBLAS") == std::string::npos) GTEST_SKIP() << "not OpenBLAS";
  const CliRun run = testing::run_command(std::string("OPENBLAS_CORETYPE=Prescott ") + GRPO_BINARY + " version");
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_NE(run.output.find("BLAS core: Prescott\n"), std::string::npos) << run.output;
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  const bool warned = run.output.find("warning: ") != std::string::npos;
  EXPECT_EQ(warned, avx2) << run.output;
  if (avx2) {
    EXPECT_NE(run.output.find("OPENBLAS_CORETYPE="), std::string::npos) << run.output;
    EXPECT_NE(run.output.find("docs/performance.md"), std::string::npos) << run.output;
  }
}

TEST(Cli, TrainingStartNamesTheBlasCoreAndWarnsOnceOnAGenericCore) {
  if (run_grpo("version").output.find("BLAS: OpenBLAS") == std::string::npos) GTEST_SKIP() << "not OpenBLAS";
  const auto dir = std::filesystem::temp_directory_path() / ("grpo_blas_core_" + std::to_string(::getpid()));
  const CliRun run = testing::run_command(
      std::string("OPENBLAS_CORETYPE=Prescott ") + GRPO_BINARY + " sft --config " + GRPO_SOURCE_DIR +
      "/configs/demo/sft.yaml trainer.steps=1 'data.train_path=builtin:addition?n=8&seed=2' trainer.prompts_per_step=4 "
      "checkpoint.resume=none trainer.threads=1 trainer.run_dir=" + dir.string());
  std::filesystem::remove_all(dir);
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_NE(run.output.find("BLAS OpenBLAS "), std::string::npos) << run.output;
  EXPECT_NE(run.output.find(", core Prescott, 1 thread"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("LibTorch "), std::string::npos) << run.output;
  size_t warnings = 0;
  for (auto at = run.output.find("OPENBLAS_CORETYPE="); at != std::string::npos;
       at = run.output.find("OPENBLAS_CORETYPE=", at + 1))
    ++warnings;
  EXPECT_EQ(warnings, __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? 1u : 0u) << run.output;
}

TEST(Cli, CudaWithoutACudaBuildFailsBeforeTheRunDirectoryExists) {
  if (run_grpo("version").output.find("CUDA: not built") == std::string::npos) GTEST_SKIP() << "a CUDA build";
  const auto dir = std::filesystem::temp_directory_path() / (std::to_string(::getpid()) + "_cuda_run");
  for (const char* verb : {"train", "sft"}) {
    const CliRun run = run_grpo(std::string(verb) + " --config " + GRPO_SOURCE_DIR +
                                "/configs/demo/grpo.yaml model.path=builtin:demo-qwen2 model.device=cuda trainer.run_dir=" +
                                dir.string());
    EXPECT_NE(run.exit_code, 0);
    EXPECT_NE(run.output.find("model.device: cuda, but this build's LibTorch has no CUDA"), std::string::npos) << run.output;
    EXPECT_FALSE(std::filesystem::exists(dir)) << verb;
  }
}

TEST(Cli, ConfigPrintsResolvedYamlWithOverrides) {
  const std::string path = write_temp("ok.yaml", "model:\n  path: /m\ngrpo:\n  preset: dapo\n");
  const CliRun run = run_grpo("config --config " + path + " grpo.group_size=12");
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_NE(run.output.find("  group_size: 12\n"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("    eps_high: 0.28\n"), std::string::npos) << run.output;
  EXPECT_TRUE(parse_config(run.output, "printed").is_ok());
}

TEST(Cli, BadConfigIsOneLineNamingKeyAndLineWithExitCode2) {
  const std::string path = write_temp("bad.yaml", "model:\n  path: /m\noptimizer:\n  lr: fast\n");
  const CliRun run = run_grpo("config --config " + path);
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_EQ(run.output, "grpo config: " + path + ":4: optimizer.lr: expected a number > 0, got 'fast'\n");
}

TEST(Cli, MissingConfigFileAndBadArgumentsAreUsageErrors) {
  EXPECT_EQ(run_grpo("config --config /nonexistent.yaml").exit_code, 2);
  EXPECT_EQ(run_grpo("config").exit_code, 2);
  EXPECT_EQ(run_grpo("config --bogus").exit_code, 2);
  EXPECT_EQ(run_grpo("config stray").exit_code, 2);
}

TEST(Cli, ToyRunLearnsAndReportsProgress) {
  const CliRun run = run_grpo(std::string("toy --config ") + GRPO_SOURCE_DIR +
                           "/configs/demo/toy.yaml trainer.steps=40 logging.every_steps=10");
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_NE(run.output.find("step   40/40 reward"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("toy GRPO: reward"), std::string::npos);
}

std::string shared(const std::string& path) { return std::string(GRPO_SHARED_DIR) + "/" + path; }

TEST(Cli, GenerateGreedyOnFixtureModelMatchesTransformers) {
  const CliRun run = run_grpo("generate --model " + shared("fixtures/models/qwen2-tiny") +
                              " --prompt-ids 15,52,236,202,44,187,230 --temperature 0 --max-new-tokens 16 --samples 2");
  ASSERT_EQ(run.exit_code, 0) << run.output;
  // The continuation transformers computed for this prompt (fixture expected.json), twice.
  const std::string want = "[434,55,207,436,255,240,214,437,304,130,434,434,166,434,322,322]";
  EXPECT_NE(run.output.find("\"completion_ids\":" + want), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("\"sample\":1"), std::string::npos);
  EXPECT_NE(run.output.find("\"finish_reason\":\"length\""), std::string::npos);
}

TEST(Cli, GeneratePrintsTextWithATokenizer) {
  const CliRun run = run_grpo("generate --model " + shared("fixtures/models/llama-tiny") +
                              " --tokenizer builtin:bytes --prompt hello --max-new-tokens 8 --seed 3");
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_NE(run.output.find("\"completion\":\""), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("\"finish_reason\":"), std::string::npos);
}

TEST(Cli, GenerateRejectsBadInputWithExitCode2) {
  const std::string model = " --model " + shared("fixtures/models/qwen2-tiny");
  EXPECT_EQ(run_grpo("generate" + model).exit_code, 2);  // no prompt
  EXPECT_EQ(run_grpo("generate" + model + " --prompt hello").exit_code, 2);  // text without tokenizer
  EXPECT_EQ(run_grpo("generate" + model + " --prompt-ids 1,x").exit_code, 2);
  EXPECT_EQ(run_grpo("generate" + model + " --prompt-ids 99999").exit_code, 2);  // outside the vocabulary
  EXPECT_EQ(run_grpo("generate" + model + " --prompt-ids 1 --top-p 0").exit_code, 2);
  // An empty stop string matches everywhere: beside another one it ended every completion after a token.
  const CliRun empty_stop = run_grpo("generate" + model + " --tokenizer builtin:bytes --prompt hi --stop zz --stop ''");
  EXPECT_EQ(empty_stop.exit_code, 2) << empty_stop.output;
  EXPECT_NE(empty_stop.output.find("--stop: an empty stop string"), std::string::npos) << empty_stop.output;
  const CliRun missing = run_grpo("generate --model /nonexistent --prompt-ids 1");
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_NE(missing.output.find("/nonexistent/config.json"), std::string::npos) << missing.output;
}

TEST(Cli, TokenizeMatchesTransformersIdsAndNamesMalformedLines) {
  const std::string input = write_temp("strings.jsonl", "\"Hello world!\"\n{\"text\": \"<think>x</think>\"}\n");
  const CliRun run = run_grpo("tokenize --tokenizer " + shared("fixtures/tokenizers/qwen3") + " --input " + input);
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_NE(run.output.find("{\"ids\":[9707,1879,0],"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("{\"ids\":[151667,87,151668],"), std::string::npos) << run.output;

  const std::string bad = write_temp("bad.jsonl", "\"ok\"\n{\"text\": 5}\n");
  const CliRun failed = run_grpo("tokenize --tokenizer " + shared("fixtures/tokenizers/qwen3") + " --input " + bad);
  EXPECT_EQ(failed.exit_code, 2);
  EXPECT_NE(failed.output.find(bad + ":2:"), std::string::npos) << failed.output;
}

TEST(Cli, RewardScoresOfflineAndNamesMalformedLines) {
  const std::string input = write_temp("completions.jsonl",
                                       "{\"id\": \"a\", \"completion\": \"<think>two plus two</think><answer>4</answer>\", \"answer\": \"4\"}\n"
                                       "\n"
                                       "{\"id\": \"b\", \"completion\": \"<answer>5</answer>\", \"answer\": \"4\"}\n");
  const std::string output = write_temp("scored.jsonl", "");
  const std::string config = std::string(GRPO_SOURCE_DIR) + "/configs/rewards/r1_math.yaml";
  const CliRun run = run_grpo("reward --config " + config + " --input " + input + " --output " + output);
  ASSERT_EQ(run.exit_code, 0) << run.output;
  std::ifstream in(output);
  std::string first, second;
  std::getline(in, first);
  std::getline(in, second);
  EXPECT_NE(first.find("\"reward\":1.2"), std::string::npos) << first;   // math 1 + 0.1 format + 0.1 language
  EXPECT_NE(second.find("\"reward\":0.0"), std::string::npos) << second;
  EXPECT_NE(second.find("\"math\":0.0"), std::string::npos) << second;

  const std::string bad = write_temp("bad_completions.jsonl", "{\"completion\": \"ok\", \"answer\": \"1\"}\n{\"answer\": 1}\n");
  const CliRun failed = run_grpo("reward --config " + config + " --input " + bad + " --output " + output);
  EXPECT_EQ(failed.exit_code, 2);
  EXPECT_NE(failed.output.find(bad + ":2: expected an object with a string \"completion\""), std::string::npos) << failed.output;
  // A gold answer missing is a reward failure: with on_error=fail the run stops naming the sample.
  const std::string no_gold = write_temp("no_gold.jsonl", "{\"id\": \"q7\", \"completion\": \"\\\\boxed{1}\"}\n");
  const CliRun stopped = run_grpo("reward --config " + config + " --input " + no_gold + " --output " + output);
  EXPECT_EQ(stopped.exit_code, 1);
  EXPECT_NE(stopped.output.find("reward 'math' failed on sample 'q7'"), std::string::npos) << stopped.output;
}

// The documented reward-model config, run from the repository root as docs/rewards.md shows.
TEST(Cli, RewardModelConfigScoresWithTheRuleRewards) {
  const std::string input = write_temp("rm_completions.jsonl",
                                       "{\"id\": \"a\", \"prompt\": \"2+2?\", \"completion\": \"<think>4</think><answer>4</answer>\"}\n"
                                       "{\"id\": \"b\", \"prompt\": \"2+2?\", \"completion\": \"five\"}\n"
                                       "{\"id\": \"c\", \"prompt\": \"Hi\", \"completion\": \"hello there\"}\n");
  const std::string output = write_temp("rm_scored.jsonl", "");
  const CliRun run = testing::run_command("cd " + std::string(GRPO_SOURCE_DIR) + " && " + GRPO_BINARY +
                                          " reward --config configs/rewards/reward_model.yaml --input " + input +
                                          " --output " + output);
  ASSERT_EQ(run.exit_code, 0) << run.output;
  std::ifstream in(output);
  std::string line;
  double normalized_sum = 0;
  int lines = 0;
  while (std::getline(in, line)) {
    const nlohmann::json r = nlohmann::json::parse(line);
    const double model = r["rewards"]["reward_model"].get<double>();
    EXPECT_TRUE(r["components"].contains("reward_model.raw")) << line;
    EXPECT_NEAR(r["reward"].get<double>(), 0.5 * model + r["rewards"]["format"].get<double>(), 1e-9) << line;
    normalized_sum += model;
    ++lines;
  }
  EXPECT_EQ(lines, 3);
  EXPECT_NEAR(normalized_sum, 0.0, 1e-9);  // normalize: zscore over the scored batch
}

TEST(Cli, ConvertExportsAVerifiedCheckpoint) {
  const std::string dir = std::filesystem::temp_directory_path() / ("grpo_convert_" + std::to_string(::getpid()));
  const CliRun trained = run_grpo("sft --config " + std::string(GRPO_SOURCE_DIR) + "/configs/demo/sft.yaml trainer.steps=2 "
                                  "'data.train_path=builtin:addition?n=16&seed=2' trainer.prompts_per_step=4 "
                                  "checkpoint.resume=none trainer.run_dir=" + dir);
  ASSERT_EQ(trained.exit_code, 0) << trained.output;
  const CliRun converted = run_grpo("convert --checkpoint " + dir + "/checkpoints/step-2 --output " + dir + "/hf");
  ASSERT_EQ(converted.exit_code, 0) << converted.output;
  for (const char* file : {"config.json", "model.safetensors", "tokenizer.json"})
    EXPECT_TRUE(std::filesystem::exists(dir + "/hf/" + file)) << file;
  // Both verbs record their success for `grpo pipeline`: verb, outputs, the step they ended at.
  const auto trained_record = nlohmann::json::parse(std::ifstream(dir + "/COMPLETE"));
  EXPECT_EQ(trained_record["verb"], "sft");
  EXPECT_EQ(trained_record["outputs"]["final"], dir + "/final");
  EXPECT_EQ(trained_record["metrics"]["last_step"], 2);
  const auto converted_record = nlohmann::json::parse(std::ifstream(dir + "/hf/COMPLETE"));
  EXPECT_EQ(converted_record["verb"], "convert");
  EXPECT_EQ(converted_record["outputs"]["output"], dir + "/hf");
  EXPECT_EQ(converted_record["metrics"]["step"], 2);
  const CliRun generated = run_grpo("generate --model " + dir + "/hf --prompt 12+34= --max-new-tokens 4 --temperature 0");
  EXPECT_EQ(generated.exit_code, 0) << generated.output;
  EXPECT_NE(generated.output.find("\"completion\""), std::string::npos) << generated.output;
  const CliRun missing = run_grpo("convert --checkpoint " + dir + "/checkpoints/step-99 --output " + dir + "/x");
  EXPECT_EQ(missing.exit_code, 2);
  std::filesystem::remove_all(dir);
}

TEST(Cli, ToyRejectsAnotherModel) {
  const CliRun run = run_grpo(std::string("toy --config ") + GRPO_SOURCE_DIR + "/configs/demo/toy.yaml model.path=/x");
  EXPECT_EQ(run.exit_code, 2);
  EXPECT_NE(run.output.find("model.path"), std::string::npos);
}

}  // namespace
}  // namespace grpo
