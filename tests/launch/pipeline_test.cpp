// The pipeline file is checked whole before anything runs (names, verbs, references, cycles,
// each stage's config and overrides), and each stage's command line is what the contract says.

#include "launch/pipeline.h"

#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "core/config.h"
#include "launch/completion_marker.h"

namespace grpo {
namespace {

namespace fs = std::filesystem;

class PipelineFile : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("grpo_pipeline_test_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    std::ofstream(dir_ / "sft.yaml") << "model: {path: \"builtin:demo-qwen2\"}\ntrainer: {steps: 3}\n";
    std::ofstream(dir_ / "grpo.yaml") << "model: {path: x}\ngrpo: {group_size: 4}\n";
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Parses `text` as <dir>/pipe.yaml, so stage configs are found beside it.
  StatusOr<Pipeline> parse(const std::string& text, const std::vector<std::string>& overrides = {}) {
    const std::string path = (dir_ / "pipe.yaml").string();
    std::ofstream(path) << text;
    return load_pipeline(path, overrides);
  }
  std::string file() const { return (dir_ / "pipe.yaml").string(); }

  fs::path dir_;
};

const char* kFourStages =
    "run_dir: /tmp/run\n"
    "ranks: 2\n"
    "stages:\n"
    "  - name: sft\n"
    "    verb: sft\n"
    "    config: sft.yaml\n"
    "    ranks: 1\n"
    "  - name: eval_sft\n"
    "    verb: eval\n"
    "    config: sft.yaml\n"
    "    set: {model.path: \"${sft.final}\", eval.samples: 2}\n"
    "  - name: grpo\n"
    "    verb: train\n"
    "    config: grpo.yaml\n"
    "    set:\n"
    "      model.path: ${sft.final}\n"
    "  - name: export\n"
    "    verb: convert\n"
    "    args: [--checkpoint, \"${grpo.run_dir}/checkpoints/step-3\"]\n";

TEST_F(PipelineFile, PlansStagesWithDirectoriesRanksAndInputs) {
  StatusOr<Pipeline> p = parse(kFourStages);
  ASSERT_TRUE(p) << p.status().message();
  ASSERT_EQ(p->order.size(), 4u);
  EXPECT_EQ(p->order[0].config.name, "sft");
  EXPECT_EQ(p->order[0].dir, "/tmp/run/sft");
  EXPECT_EQ(p->order[0].config_path, (dir_ / "sft.yaml").string());
  EXPECT_EQ(p->order[0].ranks, 1);
  EXPECT_EQ(p->order[1].ranks, 2);
  EXPECT_EQ(p->order[2].inputs, std::vector<std::string>{"sft"});
  EXPECT_EQ(p->order[3].inputs, std::vector<std::string>{"grpo"});
}

TEST_F(PipelineFile, StageCommandsFollowTheContract) {
  StatusOr<Pipeline> p = parse(kFourStages);
  ASSERT_TRUE(p) << p.status().message();
  const StageOutputs outputs = {{"sft", {{"final", "/tmp/run/sft/final"}, {"run_dir", "/tmp/run/sft"}}},
                                {"grpo", {{"final", "/tmp/run/grpo/final"}, {"run_dir", "/tmp/run/grpo"}}}};
  StatusOr<std::vector<std::string>> sft = stage_command(*p, p->order[0], outputs, "/bin/grpo");
  ASSERT_TRUE(sft) << sft.status().message();
  EXPECT_EQ(*sft, (std::vector<std::string>{"/bin/grpo", "sft", "--config", (dir_ / "sft.yaml").string(),
                                            "trainer.run_dir=\"/tmp/run/sft\"", "--resume", "auto"}));

  StatusOr<std::vector<std::string>> eval = stage_command(*p, p->order[1], outputs, "/bin/grpo");
  ASSERT_TRUE(eval) << eval.status().message();
  std::vector<std::string> expected = {"mpirun", "--oversubscribe", "-np", "2"};
  if (::geteuid() == 0) expected.push_back("--allow-run-as-root");
  for (const char* word : {"/bin/grpo", "eval", "--config"}) expected.push_back(word);
  expected.push_back((dir_ / "sft.yaml").string());
  // Overrides in key order after the run directory; strings quoted so YAML reads them as written.
  for (const char* word : {"trainer.run_dir=\"/tmp/run/eval_sft\"", "eval.samples=2", "model.path=\"/tmp/run/sft/final\""})
    expected.push_back(word);
  EXPECT_EQ(*eval, expected);

  StatusOr<std::vector<std::string>> convert = stage_command(*p, p->order[3], outputs, "/bin/grpo");
  ASSERT_TRUE(convert) << convert.status().message();
  EXPECT_EQ(convert->back(), "/tmp/run/grpo/checkpoints/step-3");
  EXPECT_NE(std::find(convert->begin(), convert->end(), "/tmp/run/export"), convert->end());
  EXPECT_EQ(std::find(convert->begin(), convert->end(), "--resume"), convert->end());

  // An output the finished stage did not record is named with those it has.
  StatusOr<std::vector<std::string>> missing = stage_command(*p, p->order[2], {{"sft", {{"run_dir", "/r"}}}}, "/bin/grpo");
  ASSERT_FALSE(missing);
  EXPECT_NE(missing.status().message().find("no output 'final' (it has: run_dir)"), std::string::npos)
      << missing.status().message();
}

TEST_F(PipelineFile, OverridesSetTopLevelKeys) {
  StatusOr<Pipeline> p = parse(kFourStages, {"run_dir=/elsewhere", "ranks=3"});
  ASSERT_TRUE(p) << p.status().message();
  EXPECT_EQ(p->order[1].dir, "/elsewhere/eval_sft");
  EXPECT_EQ(p->order[1].ranks, 3);
}

TEST_F(PipelineFile, AStageRunsAfterTheStagesItRefersTo) {
  StatusOr<Pipeline> p = parse(
      "stages:\n"
      "  - {name: eval, verb: eval, config: sft.yaml, set: {model.path: \"${train.final}\"}}\n"
      "  - {name: train, verb: sft, config: sft.yaml}\n");
  ASSERT_TRUE(p) << p.status().message();
  EXPECT_EQ(p->order[0].config.name, "train");
  EXPECT_EQ(p->order[1].config.name, "eval");
}

void expect_error(const StatusOr<Pipeline>& p, const std::string& fragment) {
  ASSERT_FALSE(p) << "expected an error containing: " << fragment;
  EXPECT_NE(p.status().message().find(fragment), std::string::npos) << p.status().message();
}

TEST_F(PipelineFile, UnknownStageInAReferenceNamesFileLineAndKey) {
  expect_error(parse("stages:\n"
                     "  - {name: sft, verb: sft, config: sft.yaml}\n"
                     "  - name: grpo\n"
                     "    verb: train\n"
                     "    config: grpo.yaml\n"
                     "    set:\n"
                     "      model.path: ${sfft.final}\n"),
               file() + ":7: stages[1].set.model.path: '${sfft.final}' refers to stage 'sfft', which is not in the "
                        "pipeline (stages: sft, grpo)");
}

TEST_F(PipelineFile, UnknownOutputListsTheVerbsOutputs) {
  expect_error(parse("stages:\n"
                     "  - {name: sft, verb: sft, config: sft.yaml}\n"
                     "  - {name: e, verb: eval, config: sft.yaml, set: {model.path: \"${sft.model}\"}}\n"),
               "stages[1].set.model.path: stage 'sft' (sft) has no output 'model'; expected one of run_dir, final");
}

TEST_F(PipelineFile, CyclesAreNamed) {
  expect_error(parse("stages:\n"
                     "  - {name: a, verb: sft, config: sft.yaml, set: {model.path: \"${b.final}\"}}\n"
                     "  - {name: b, verb: sft, config: sft.yaml, set: {model.path: \"${a.final}\"}}\n"),
               "a -> b -> a");
  expect_error(parse("stages:\n  - {name: a, verb: sft, config: sft.yaml, set: {model.path: \"${a.final}\"}}\n"),
               "a -> a");
}

TEST_F(PipelineFile, MissingConfigUnknownVerbAndDuplicateNames) {
  expect_error(parse("stages:\n  - name: a\n    verb: sft\n    config: nowhere.yaml\n"),
               file() + ":4: stages[0].config: no such file '" + (dir_ / "nowhere.yaml").string() + "'");
  expect_error(parse("stages:\n  - {name: a, verb: grpo, config: sft.yaml}\n"),
               "stages[0].verb: unknown verb 'grpo'; expected one of sft, train, eval, sample, convert");
  expect_error(parse("stages:\n  - {name: a, verb: sft, config: sft.yaml}\n  - {name: a, verb: eval, config: sft.yaml}\n"),
               "stages[1].name: 'a' is also the name of stages[0]");
  expect_error(parse("stages:\n  - {name: a, verb: sft}\n"), "stages[0].config: a sft stage needs a config file");
  expect_error(parse("stages:\n  - {name: a, verb: sft, config: sft.yaml, set: {trainer.run_dir: x}}\n"),
               "stages[0].set.trainer.run_dir: the pipeline sets it to 'runs/pipeline/a'");
  expect_error(parse("stages:\n  - {name: a, verb: sft, config: sft.yaml, sett: {}}\n"), "stages[0].sett: unknown key");
  expect_error(parse("stages: []\n"), "stages: expected at least one stage");
}

TEST_F(PipelineFile, StageOverridesAreCheckedAgainstTheStageConfigBeforeAnythingRuns) {
  // A typo in a later stage's key fails the whole file, naming the stage and the key.
  expect_error(parse("stages:\n"
                     "  - {name: sft, verb: sft, config: sft.yaml}\n"
                     "  - {name: grpo, verb: train, config: grpo.yaml, set: {model.path: \"${sft.final}\", "
                     "optimizer.lrr: 0.1}}\n"),
               "stages[1] 'grpo': ");
  expect_error(parse("stages:\n  - {name: sft, verb: sft, config: sft.yaml, set: {trainer.steps: -4}}\n"),
               "trainer.steps");
}

// The shipped pipelines: the demo's and the R1 recipe's, every stage config with its overrides.
TEST(ShippedPipelines, DemoAndR1AreValid) {
  if (config_reference_markdown().find("sample.samples_per_prompt") == std::string::npos)
    GTEST_SKIP() << "their `sample` stages need the sample.* config keys of `grpo sample`";
  const std::string source = GRPO_SOURCE_DIR;
  StatusOr<Pipeline> demo = load_pipeline(source + "/configs/demo/pipeline.yaml");
  ASSERT_TRUE(demo) << demo.status().message();
  std::vector<std::string> verbs;
  for (const PlannedStage& stage : demo->order) verbs.push_back(stage.config.verb);
  EXPECT_EQ(verbs, (std::vector<std::string>{"sft", "eval", "train", "eval", "sample", "sft", "eval"}));
  StatusOr<Pipeline> r1 = load_pipeline(source + "/configs/r1/pipeline.yaml");
  ASSERT_TRUE(r1) << r1.status().message();
  for (const PlannedStage& stage : r1->order) {
    EXPECT_EQ(stage.ranks, 8) << stage.config.name;
    StatusOr<Config> config = load_config(stage.config_path);
    ASSERT_TRUE(config) << config.status().message();
    EXPECT_EQ(config->model.device, DeviceKind::kCuda) << stage.config.name;
    EXPECT_EQ(config->model.dtype, DType::kBFloat16) << stage.config.name;
  }
}

TEST(StageReferences, SubstituteInsideText) {
  const StageOutputs outputs = {{"grpo", {{"run_dir", "/r/grpo"}}}, {"s", {{"samples", "/r/s/samples.jsonl"}}}};
  StatusOr<std::string> text = substitute_stage_references("a ${grpo.run_dir}/x and ${s.samples}!", outputs);
  ASSERT_TRUE(text) << text.status().message();
  EXPECT_EQ(*text, "a /r/grpo/x and /r/s/samples.jsonl!");
  StatusOr<std::string> plain = substitute_stage_references("no references", outputs);
  EXPECT_EQ(*plain, "no references");
  EXPECT_FALSE(find_stage_references("${grpo.final"));
  EXPECT_FALSE(find_stage_references("${grpo}"));
  StatusOr<std::vector<StageReference>> two = find_stage_references("${a.b}${c.d.e}");
  ASSERT_TRUE(two);
  ASSERT_EQ(two->size(), 2u);
  EXPECT_EQ((*two)[1].stage, "c");
  EXPECT_EQ((*two)[1].output, "d.e");
}

TEST(CompletionMarker, RoundTripAndErrors) {
  const fs::path dir = fs::temp_directory_path() / ("grpo_marker_test_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  StatusOr<std::optional<CompletionRecord>> none = read_completion_marker(dir.string());
  ASSERT_TRUE(none);
  EXPECT_FALSE(none->has_value());
  CompletionRecord record;
  record.verb = "train";
  record.seconds = 1.5;
  record.outputs = {{"final", "/x/final"}};
  record.metrics = {{"reward", 0.25}};
  ASSERT_TRUE(write_completion_marker(dir.string(), record).is_ok());
  StatusOr<std::optional<CompletionRecord>> back = read_completion_marker(dir.string());
  ASSERT_TRUE(back && back->has_value());
  EXPECT_EQ((*back)->verb, "train");
  EXPECT_EQ((*back)->outputs.at("final"), "/x/final");
  EXPECT_DOUBLE_EQ((*back)->metrics["reward"].get<double>(), 0.25);
  EXPECT_EQ((*back)->finished.size(), 20u);  // 2026-11-30T01:02:03Z
  std::ofstream(dir / kCompletionMarkerName) << "not json";
  StatusOr<std::optional<CompletionRecord>> bad = read_completion_marker(dir.string());
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.status().message().find((dir / kCompletionMarkerName).string()), std::string::npos);
  ASSERT_TRUE(remove_completion_marker(dir.string()).is_ok());
  EXPECT_FALSE(fs::exists(dir / kCompletionMarkerName));
  fs::remove_all(dir);
}

}  // namespace
}  // namespace grpo
