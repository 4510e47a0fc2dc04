// On-policy distillation in `grpo train` (distill.*), with the real binary: a small student
// trained toward a fixed teacher (a tiny model after a few SFT steps) lowers its reverse KL to it;
// 2 ranks, also at ZeRO-3 where the teacher is sharded too, train like 1; a resumed run equals an
// uninterrupted one; and the teacher is refused, naming both models, when it cannot score the
// student's tokens.

#include <unistd.h>

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <numeric>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/support/run_command.h"
#include "tests/support/run_weights.h"

namespace grpo {
namespace {

namespace fs = std::filesystem;
using testing::final_weights;
using testing::max_difference;

const fs::path kWork = fs::temp_directory_path() / ("grpo_distill_" + std::to_string(::getpid()));

class RemoveWorkDirectory : public ::testing::Environment {
 public:
  void TearDown() override { fs::remove_all(kWork); }
};
[[maybe_unused]] ::testing::Environment* const kCleanup = ::testing::AddGlobalTestEnvironment(new RemoveWorkDirectory);

testing::CommandResult run(const std::string& command) { return testing::run_command("timeout 120 " + command); }

std::string write_config(const std::string& name, const std::string& body) {
  fs::create_directories(kWork);
  const fs::path path = kWork / name;
  std::ofstream(path) << body;
  return path.string();
}

// The teacher: a 2-layer model after 40 SFT steps on the addition task, made once per test binary.
const fs::path& teacher() {
  static const fs::path dir = [] {
    const std::string config = write_config(
        "teacher.yaml",
        "model: {path: \"builtin:demo-qwen2?layers=2&hidden=64&intermediate=128&heads=2&kv_heads=1\"}\n"
        "data: {train_path: \"builtin:addition?n=256&digits=1-2&seed=5\"}\n"
        "optimizer: {lr: 3.0e-3}\n"
        "trainer: {steps: 40, prompts_per_step: 16, seed: 3, threads: 1}\n"
        "checkpoint: {every_steps: 0, resume: none}\n");
    const fs::path run_dir = kWork / "teacher";
    const testing::CommandResult r =
        run(testing::mpi_launcher(1) + GRPO_BINARY + " sft --config " + config + " trainer.run_dir=" + run_dir.string());
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return run_dir / "final";
  }();
  return dir;
}

// A 1-layer student of another width than the teacher, sampling 4 completions of 8 prompts a step.
std::string student_config() {
  return write_config(
      "student.yaml",
      "model: {path: \"builtin:demo-qwen2?layers=1&hidden=32&intermediate=64&heads=2&kv_heads=1\"}\n"
      "data: {train_path: \"builtin:addition?n=256&digits=1-2&seed=5\"}\n"
      "rollout: {max_new_tokens: 24, temperature: 1.0}\n"
      "reward: {functions: [{name: math}]}\n"
      "grpo: {group_size: 4, kl: {beta: 0.0}, aggregation: {mode: token-mean}}\n"
      "distill: {teacher_path: \"" + teacher().string() + "\", coefficient: 1.0, reward_weight: 0.0}\n"
      "optimizer: {lr: 3.0e-3}\n"
      "trainer: {steps: 60, prompts_per_step: 8, seed: 3, threads: 1}\n"
      "checkpoint: {every_steps: 0, resume: none}\n");
}

std::vector<nlohmann::json> metrics_rows(const fs::path& run_dir) {
  std::vector<nlohmann::json> rows;
  std::ifstream in(run_dir / "metrics.jsonl");
  for (std::string line; std::getline(in, line);) rows.push_back(nlohmann::json::parse(line));
  return rows;
}

double mean_reverse_kl(const std::vector<nlohmann::json>& rows, size_t begin, size_t end) {
  double sum = 0;
  for (size_t i = begin; i < end; ++i) sum += rows[i].at("distill/reverse_kl").get<double>();
  return sum / static_cast<double>(end - begin);
}

TEST(Distillation, StudentReverseKlToTheTeacherFalls) {
  const fs::path dir = kWork / "falls";
  const testing::CommandResult r = run(testing::mpi_launcher(1) + GRPO_BINARY + " train --config " + student_config() +
                                       " trainer.run_dir=" + dir.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::vector<nlohmann::json> rows = metrics_rows(dir);
  ASSERT_EQ(rows.size(), 60u);
  for (const nlohmann::json& row : rows) EXPECT_GE(row.at("distill/teacher_s").get<double>(), 0.0);
  const double first = mean_reverse_kl(rows, 0, 10), last = mean_reverse_kl(rows, 50, 60);
  EXPECT_GT(first, 0.5) << "the untrained student should be far from the teacher";
  EXPECT_LT(last, 0.75 * first) << "reverse KL over the first 10 steps " << first << ", over the last 10 " << last;
  // The teacher is fixed: a run that never updates (lr ~ 0) keeps its distance.
  const fs::path still = kWork / "still";
  const testing::CommandResult s = run(testing::mpi_launcher(1) + GRPO_BINARY + " train --config " + student_config() +
                                       " trainer.steps=20 optimizer.lr=1.0e-30 trainer.run_dir=" + still.string());
  ASSERT_EQ(s.exit_code, 0) << s.output;
  const std::vector<nlohmann::json> still_rows = metrics_rows(still);
  EXPECT_GT(mean_reverse_kl(still_rows, 10, 20), 0.85 * first);
}

// AdamW with eps = 1 updates by about lr * gradient, so weight differences measure gradient
// differences instead of amplifying float noise (as in distributed_test). The rule reward is
// mixed in (reward_weight 0.5) so both parts of the advantage are compared.
TEST(Distillation, TwoRanksAndZeroStage3MatchOneRank) {
  const std::string common = std::string(GRPO_BINARY) + " train --config " + student_config() +
                             " trainer.steps=2 optimizer.lr=0.1 optimizer.eps=1.0 distill.reward_weight=0.5";
  const fs::path one = kWork / "np1";
  testing::CommandResult r = run(testing::mpi_launcher(1) + common + " trainer.run_dir=" + one.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::vector<nlohmann::json> one_rows = metrics_rows(one);
  for (const auto& [name, extra] : std::map<std::string, std::string>{{"np2", ""}, {"np2_zero3", " trainer.zero_stage=3"}}) {
    const fs::path two = kWork / name;
    r = run(testing::mpi_launcher(2) + common + extra + " trainer.run_dir=" + two.string());
    ASSERT_EQ(r.exit_code, 0) << r.output;
    EXPECT_LE(max_difference(final_weights(one), final_weights(two)), 1e-5) << name;
    const std::vector<nlohmann::json> two_rows = metrics_rows(two);
    ASSERT_EQ(two_rows.size(), one_rows.size());
    for (size_t i = 0; i < one_rows.size(); ++i)
      EXPECT_NEAR(one_rows[i].at("distill/reverse_kl").get<double>(), two_rows[i].at("distill/reverse_kl").get<double>(),
                  1e-5) << name << " step " << i + 1;
  }
  // ... and the update is not trivially zero.
  const fs::path untrained = kWork / "untrained";
  r = run(testing::mpi_launcher(1) + common + " trainer.steps=1 optimizer.lr=1.0e-30 trainer.run_dir=" + untrained.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_GT(max_difference(final_weights(one), final_weights(untrained)), 1e-4);
}

// The teacher is loaded afresh and frozen, so a run resumed from its checkpoint trains exactly like
// one that never stopped.
TEST(Distillation, AResumedRunEqualsAnUninterruptedOne) {
  const std::string common = std::string(GRPO_BINARY) + " train --config " + student_config();
  const fs::path straight = kWork / "straight", resumed = kWork / "resumed";
  testing::CommandResult r = run(testing::mpi_launcher(2) + common + " trainer.steps=6 trainer.run_dir=" + straight.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run(testing::mpi_launcher(2) + common + " trainer.steps=3 trainer.run_dir=" + resumed.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run(testing::mpi_launcher(2) + common + " trainer.steps=6 trainer.run_dir=" + resumed.string() + " --resume auto");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("resumed from"), std::string::npos) << r.output;
  EXPECT_EQ(max_difference(final_weights(straight), final_weights(resumed)), 0.0);
  const std::vector<nlohmann::json> a = metrics_rows(straight), b = metrics_rows(resumed);
  ASSERT_EQ(a.size(), 6u);
  ASSERT_EQ(b.size(), 6u);
  for (size_t i = 0; i < a.size(); ++i)
    EXPECT_EQ(a[i].at("distill/reverse_kl"), b[i].at("distill/reverse_kl")) << "step " << i + 1;
}

TEST(Distillation, TeachersThatCannotScoreTheStudentAreRefused) {
  const std::string common = std::string(GRPO_BINARY) + " train --config " + student_config() + " trainer.steps=1";
  // qwen2-tiny's weights (512 tokens) with the student's own tokenizer files (261 tokens).
  const fs::path other_vocabulary = kWork / "qwen2-tiny";
  fs::create_directories(other_vocabulary);
  const fs::path fixture = fs::path(GRPO_SHARED_DIR) / "fixtures" / "models" / "qwen2-tiny";
  for (const char* file : {"config.json", "model.safetensors"})
    fs::copy_file(fixture / file, other_vocabulary / file, fs::copy_options::overwrite_existing);
  for (const char* file : {"tokenizer.json", "tokenizer_config.json"})
    fs::copy_file(teacher() / file, other_vocabulary / file, fs::copy_options::overwrite_existing);
  testing::CommandResult r = run(common + " distill.teacher_path=" + other_vocabulary.string() + " trainer.run_dir=" +
                                 (kWork / "vocab").string());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("distill.teacher_path"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("512"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("261"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("qwen2-tiny"), std::string::npos) << r.output;

  const std::string missing = (kWork / "no_such_teacher").string();
  r = run(common + " distill.teacher_path=" + missing + " trainer.run_dir=" + (kWork / "missing").string());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("distill.teacher_path"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find(missing), std::string::npos) << r.output;

  r = run(common + " grpo.filter_zero_std_groups=true trainer.run_dir=" + (kWork / "filter").string());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("grpo.filter_zero_std_groups"), std::string::npos) << r.output;

  r = run(common + " distill.coefficient=0 trainer.run_dir=" + (kWork / "coefficient").string());
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.output.find("distill.coefficient"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace grpo
