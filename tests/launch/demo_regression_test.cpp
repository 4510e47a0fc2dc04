// A shortened R1 demo pipeline under mpirun (2 ranks), as `make demo` runs it: SFT of the tiny Qwen2
// on easy worked additions, eval, GRPO on 3-digit problems rewarded by accuracy and format, eval.
// The reward must rise; a second run skips every complete stage; an interrupted GRPO stage resumes
// from its checkpoint and ends where the uninterrupted run ended; a failing stage stops the pipeline.

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>

#include <nlohmann/json.hpp>

#include "tests/support/run_command.h"

namespace {

namespace fs = std::filesystem;

int run(const std::string& command, std::string* output) {
  const grpo::testing::CommandResult result = grpo::testing::run_command("timeout 1200 " + command);
  *output += result.output;
  return result.exit_code;
}

nlohmann::json read_json(const fs::path& path) { return nlohmann::json::parse(std::ifstream(path)); }

std::map<std::string, nlohmann::json> stages_by_name(const nlohmann::json& summary) {
  std::map<std::string, nlohmann::json> stages;
  for (const auto& stage : summary["stages"]) stages[stage["name"]] = stage;
  return stages;
}

std::vector<std::string> lines_of(const fs::path& path) {
  std::vector<std::string> lines;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// A metrics line without its wall-clock fields (step_s, rollout_s, tokens_per_s, ...).
nlohmann::json without_timings(const std::string& line) {
  nlohmann::json metrics = nlohmann::json::parse(line);
  for (auto it = metrics.begin(); it != metrics.end();) {
    const std::string& key = it.key();
    it = key.size() > 2 && key.compare(key.size() - 2, 2, "_s") == 0 ? metrics.erase(it) : std::next(it);
  }
  return metrics;
}

// The stages of configs/demo/pipeline.yaml up to the second eval, shortened to about a minute.
std::string shortened_pipeline(const fs::path& dir) {
  const std::string demo = std::string(GRPO_SOURCE_DIR) + "/configs/demo/";
  const std::string eval_set = "\"builtin:addition?n=48&digits=2-3&seed=7\"";
  return "run_dir: " + dir.string() + "\n" +
         "ranks: 2\n"
         "launcher: [" + std::string(GRPO_MPIEXEC) + ", --oversubscribe, -x, OMP_WAIT_POLICY=PASSIVE]\n"
         "stages:\n"
         "  - name: sft\n    verb: sft\n    config: " + demo + "sft.yaml\n    set:\n"
         "      data.train_path: \"builtin:addition?n=2000&digits=1-2&hard_digits=3-3&hard_fraction=0.2&seed=1\"\n"
         "      trainer.steps: 300\n      checkpoint.every_steps: 0\n"
         "      data.dev_path: " + eval_set + "\n      eval.every_steps: 150\n      eval.stop_at_pass_at_1: null\n"
         "  - name: eval_sft\n    verb: eval\n    config: " + demo + "sft.yaml\n    set:\n"
         "      model.path: ${sft.final}\n      data.eval_path: " + eval_set + "\n"
         "  - name: grpo\n    verb: train\n    config: " + demo + "grpo.yaml\n    set:\n"
         "      model.path: ${sft.final}\n      data.train_path: \"builtin:addition?n=5000&digits=3-3&seed=3\"\n"
         "      trainer.steps: 100\n      rollout.temperature: 0.8\n      checkpoint.every_steps: 40\n"
         "  - name: eval_grpo\n    verb: eval\n    config: " + demo + "grpo.yaml\n    set:\n"
         "      model.path: ${grpo.final}\n      data.eval_path: " + eval_set + "\n";
}

TEST(Demo, ShortenedPipelineRaisesRewardSkipsAndResumes) {
  const fs::path dir = fs::temp_directory_path() / ("grpo_demo_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  std::ofstream(dir / "pipeline.yaml") << shortened_pipeline(dir);
  const std::string pipeline = std::string(GRPO_BINARY) + " pipeline --config " + (dir / "pipeline.yaml").string();
  std::string out;
  ASSERT_EQ(run(pipeline, &out), 0) << out;

  const nlohmann::json first = read_json(dir / "summary.json");
  auto stages = stages_by_name(first);
  ASSERT_EQ(stages.size(), 4u);
  for (const auto& [name, stage] : stages) {
    EXPECT_EQ(stage["status"], "ran") << name;
    EXPECT_EQ(read_json(dir / name / "COMPLETE")["verb"], stage["verb"]) << name;
  }
  // The table's numbers are the stages' own results.
  for (const char* name : {"eval_sft", "eval_grpo"}) {
    const auto results = read_json(dir / name / "eval.json");
    EXPECT_DOUBLE_EQ(stages[name]["metrics"]["eval/pass@1"].get<double>(), results["datasets"][0]["pass@1"].get<double>());
    EXPECT_EQ(stages[name]["outputs"]["output"], (dir / name / "eval.json").string());
  }
  EXPECT_NE(out.find("eval/pass@1"), std::string::npos) << out;
  // SFT's own evaluation of the same set at its last step saw the weights eval_sft loads, with the
  // same seeds: the same pass@1, above zero after 300 steps.
  const nlohmann::json last_sft = nlohmann::json::parse(lines_of(dir / "sft" / "metrics.jsonl").back());
  ASSERT_EQ(last_sft["step"], 300);
  EXPECT_DOUBLE_EQ(last_sft["dev/pass@1"].get<double>(), stages["eval_sft"]["metrics"]["eval/pass@1"].get<double>());
  EXPECT_GT(last_sft["dev/pass@1"].get<double>(), 0.0);
  const std::vector<std::string> grpo_metrics = lines_of(dir / "grpo" / "metrics.jsonl");
  EXPECT_EQ(stages["grpo"]["metrics"]["last_step"], 100);
  EXPECT_EQ(nlohmann::json::parse(grpo_metrics.back())["reward"], stages["grpo"]["metrics"]["reward"]);

  std::vector<double> accuracy, reward;
  for (const std::string& line : grpo_metrics) {
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

  // Run again: every stage is complete, so nothing runs and the table is the same.
  const auto metrics_time = fs::last_write_time(dir / "grpo" / "metrics.jsonl");
  std::string again;
  ASSERT_EQ(run(pipeline, &again), 0) << again;
  for (const auto& [name, stage] : stages_by_name(read_json(dir / "summary.json"))) {
    EXPECT_EQ(stage["status"], "skipped") << name;
    EXPECT_EQ(stage["metrics"], stages[name]["metrics"]) << name;
  }
  EXPECT_EQ(fs::last_write_time(dir / "grpo" / "metrics.jsonl"), metrics_time);

  // GRPO interrupted after its step-80 checkpoint: no COMPLETE, no final model, no step-100.
  fs::remove(dir / "grpo" / "COMPLETE");
  fs::remove_all(dir / "grpo" / "final");
  fs::remove_all(dir / "grpo" / "checkpoints" / "step-100");
  ASSERT_TRUE(fs::exists(dir / "grpo" / "checkpoints" / "step-80"));
  std::string resumed;
  ASSERT_EQ(run(pipeline, &resumed), 0) << resumed;
  auto after = stages_by_name(read_json(dir / "summary.json"));
  EXPECT_EQ(after["sft"]["status"], "skipped");
  EXPECT_EQ(after["eval_sft"]["status"], "skipped");
  EXPECT_EQ(after["grpo"]["status"], "resumed");
  EXPECT_EQ(after["grpo"]["metrics"]["first_step"], 80);
  EXPECT_EQ(after["eval_grpo"]["status"], "ran");  // its input was rebuilt, so it ran again
  // Resume is exact: the same last step and the same held-out result as the uninterrupted run.
  EXPECT_EQ(without_timings(lines_of(dir / "grpo" / "metrics.jsonl").back()), without_timings(grpo_metrics.back()));
  EXPECT_EQ(after["eval_grpo"]["metrics"], stages["eval_grpo"]["metrics"]);

  // `grpo eval` over two sets in one call, one of them a JSONL file with its own field names whose
  // gold answers the test computes itself; the JSON lists every problem with its gold answer.
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
  EXPECT_EQ(easy["problem_count"], 40);
  EXPECT_EQ(custom["problem_count"], 9);
  for (const auto& set : {easy, custom}) {
    // pass@1 and cons@4 are what the per-problem rows say.
    double correct = 0, consensus = 0;
    ASSERT_EQ(set["problems"].size(), set["problem_count"].get<size_t>()) << set["name"];
    for (const auto& p : set["problems"]) {
      correct += p["correct"].get<double>();
      consensus += p["majority"] == p["gold"] ? 1.0 : 0.0;
    }
    const double problems = set["problem_count"].get<double>();
    EXPECT_NEAR(set["pass@1"].get<double>(), correct / (4.0 * problems), 1e-12) << set["name"];
    EXPECT_GE(set["cons@4"].get<double>(), consensus / problems - 1e-12) << set["name"];
  }
  int row = 0;
  for (int a = 3; a < 60; a += 7, ++row) EXPECT_EQ(custom["problems"][row]["gold"], std::to_string(3 * a + 1));
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

TEST(Pipeline, AFailingStageStopsThePipelineWithItsNameAndExitCode) {
  const fs::path dir = fs::temp_directory_path() / ("grpo_pipeline_fail_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string sft = std::string(GRPO_SOURCE_DIR) + "/configs/demo/sft.yaml";
  std::ofstream(dir / "pipeline.yaml") << "run_dir: " << dir.string() << "\nstages:\n"
                                       << "  - {name: broken, verb: eval, config: " << sft
                                       << ", set: {data.eval_path: " << (dir / "missing.jsonl").string() << "}}\n"
                                       << "  - {name: after, verb: eval, config: " << sft
                                       << ", set: {model.path: \"${broken.run_dir}\"}}\n";
  const grpo::testing::CommandResult result = grpo::testing::run_command(
      "timeout 120 " + std::string(GRPO_BINARY) + " pipeline --config " + (dir / "pipeline.yaml").string());
  EXPECT_EQ(result.exit_code, 1) << result.output;
  EXPECT_NE(result.output.find("stage 'broken' (eval) failed with exit code 1"), std::string::npos) << result.output;
  const auto stages = stages_by_name(read_json(dir / "summary.json"));
  EXPECT_EQ(stages.at("broken")["status"], "failed");
  EXPECT_EQ(stages.at("broken")["exit_code"], 1);
  EXPECT_EQ(stages.at("after")["status"], "pending");
  EXPECT_FALSE(fs::exists(dir / "after"));
  fs::remove_all(dir);
}

}  // namespace
