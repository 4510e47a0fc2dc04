// The training verbs under mpirun, as a user runs them: N ranks give the same parameters as one
// rank; a run killed with SIGKILL and resumed equals an uninterrupted one bit for bit (1 and 2
// ranks, and across an epoch boundary); a failing rank ends the whole job promptly.

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <thread>

#include <nlohmann/json.hpp>

#include "tests/support/processes.h"
#include "tests/support/run_command.h"
#include "tests/support/run_weights.h"

namespace grpo {
namespace {

namespace fs = std::filesystem;
using testing::run_and_kill_when;

const fs::path kWork = fs::temp_directory_path() / ("grpo_mpi_" + std::to_string(::getpid()));

using Result = testing::CommandResult;

Result run(const std::string& command) { return testing::run_command("timeout 300 " + command); }

std::string write_config(const std::string& name, const std::string& body) {
  fs::create_directories(kWork);
  const fs::path path = kWork / name;
  std::ofstream(path) << body;
  return path.string();
}

// A tiny SFT recipe and a tiny GRPO one whose reward varies even for an untrained model.
// AdamW with eps = 1 updates by about lr * gradient (like SGD) instead of normalizing each
// coordinate, so parameter differences measure gradient differences directly instead of
// amplifying float noise in near-zero gradients.
const char* kSft =
    "model: {path: \"builtin:demo-qwen2\"}\n"
    "data: {train_path: \"builtin:addition?n=64&digits=1-3&seed=5\"}\n"
    "optimizer: {lr: 1.0e-3}\n"
    "trainer: {steps: 3, prompts_per_step: 8, seed: 3, threads: 1}\n"
    "checkpoint: {every_steps: 0, resume: none}\n";
const char* kGrpo =
    "model: {path: \"builtin:demo-qwen2\"}\n"
    "data: {train_path: \"builtin:addition?n=64&digits=1-3&seed=5\"}\n"
    "rollout: {max_new_tokens: 20, temperature: 1.0}\n"
    "reward: {functions: [{name: language, options: {language: en, empty_score: 0.0}}]}\n"
    "grpo: {group_size: 4, kl: {beta: 0.01}}\n"
    "optimizer: {lr: 1.0e-3}\n"
    "trainer: {steps: 2, prompts_per_step: 4, seed: 3, threads: 1}\n"
    "checkpoint: {every_steps: 0, resume: none}\n";

std::string fmt_name(const std::string& verb, int ranks, int stage) {
  return verb + "_np" + std::to_string(ranks) + "_zero" + std::to_string(stage);
}

using testing::final_weights;
using testing::max_difference;

// Logged metrics by step, without the wall-clock ones. Each step is logged once, also after a
// kill and a resume (the resumed run drops what the killed one logged after its checkpoint).
std::map<int64_t, nlohmann::json> metrics_by_step(const fs::path& run_dir) {
  std::map<int64_t, nlohmann::json> out;
  std::ifstream in(run_dir / "metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    nlohmann::json m = nlohmann::json::parse(line);
    for (const char* timing : {"step_s", "rollout_s", "reward_s", "train_s", "tokens_per_s", "zero3_gather_s", "zero3_reduce_scatter_s"})
      m.erase(timing);
    const int64_t step = m["step"].get<int64_t>();
    EXPECT_EQ(out.count(step), 0u) << run_dir << ": step " << step << " logged twice";
    out[step] = m;
  }
  return out;
}

TEST(Distributed, DataParallelSftMatchesOneRank) {
  const std::string config = write_config("sft.yaml", kSft);
  std::map<int, TensorMap> weights;
  for (int ranks : {1, 2, 4}) {
    const fs::path dir = kWork / ("sft_np" + std::to_string(ranks));
    const Result r = run(testing::mpi_launcher(ranks) + GRPO_BINARY + " sft --config " + config + " trainer.run_dir=" + dir.string() +
                         " optimizer.lr=0.1 optimizer.eps=1.0");
    ASSERT_EQ(r.exit_code, 0) << r.output;
    weights[ranks] = final_weights(dir);
  }
  EXPECT_LE(max_difference(weights[1], weights[2]), 1e-6);
  EXPECT_LE(max_difference(weights[1], weights[4]), 1e-6);
}

TEST(Distributed, DataParallelGrpoMatchesOneRank) {
  const std::string config = write_config("grpo.yaml", kGrpo);
  std::map<int, TensorMap> weights;
  for (int ranks : {1, 2}) {
    const fs::path dir = kWork / ("grpo_np" + std::to_string(ranks));
    const Result r = run(testing::mpi_launcher(ranks) + GRPO_BINARY + " train --config " + config + " trainer.run_dir=" + dir.string() +
                         " optimizer.lr=0.1 optimizer.eps=1.0");
    ASSERT_EQ(r.exit_code, 0) << r.output;
    weights[ranks] = final_weights(dir);
  }
  EXPECT_LE(max_difference(weights[1], weights[2]), 1e-6);
  // ... and the update is not trivially zero: a zero-step run ends elsewhere.
  const fs::path dir = kWork / "grpo_untrained";
  const Result r = run(testing::mpi_launcher(1) + GRPO_BINARY + " train --config " + config + " trainer.steps=1 optimizer.lr=1.0e-30 optimizer.eps=1.0" +
                       " trainer.run_dir=" + dir.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_GT(max_difference(weights[1], final_weights(dir)), 1e-5);
}

void expect_kill_and_resume_is_exact(const std::string& verb, const std::string& config, int ranks, int steps,
                                     int every, const std::string& name) {
  const fs::path straight = kWork / (name + "_straight"), resumed = kWork / (name + "_resumed");
  const std::string common = std::string(GRPO_BINARY) + " " + verb + " --config " + config + " trainer.steps=" +
                             std::to_string(steps) + " checkpoint.every_steps=" + std::to_string(every);
  Result a = run(testing::mpi_launcher(ranks) + common + " trainer.run_dir=" + straight.string());
  ASSERT_EQ(a.exit_code, 0) << a.output;
  run_and_kill_when(testing::mpi_launcher(ranks) + common + " trainer.run_dir=" + resumed.string(),
                    resumed / "checkpoints" / ("step-" + std::to_string(every)) / "manifest.json");
  EXPECT_FALSE(fs::exists(resumed / "final" / "model.safetensors")) << "the run finished before it was killed";
  Result b = run(testing::mpi_launcher(ranks) + common + " trainer.run_dir=" + resumed.string() + " --resume auto");
  ASSERT_EQ(b.exit_code, 0) << b.output;
  EXPECT_NE(b.output.find("resumed from"), std::string::npos) << b.output;
  EXPECT_EQ(max_difference(final_weights(straight), final_weights(resumed)), 0.0) << "parameters differ after resume";
  const auto ma = metrics_by_step(straight), mb = metrics_by_step(resumed);
  ASSERT_EQ(ma.size(), static_cast<size_t>(steps));
  for (const auto& [step, m] : ma) {
    ASSERT_TRUE(mb.count(step)) << "step " << step;
    EXPECT_EQ(m, mb.at(step)) << "metrics differ at step " << step;
  }
}

TEST(Distributed, KilledGrpoRunResumesBitForBit) {
  const std::string config = write_config("grpo_resume.yaml", kGrpo);
  expect_kill_and_resume_is_exact("train", config, 1, 12, 3, "grpo_kill_np1");
  expect_kill_and_resume_is_exact("train", config, 2, 12, 3, "grpo_kill_np2");
}

TEST(Distributed, ResumeExactlyAtAnEpochBoundary) {
  // 8 examples, 4 per step: every second step ends an epoch, and checkpoints land exactly there.
  const std::string config = write_config(
      "sft_epoch.yaml", "model: {path: \"builtin:demo-qwen2\"}\n"
                        "data: {train_path: \"builtin:addition?n=8&digits=1-2&seed=5\"}\n"
                        "trainer: {prompts_per_step: 4, seed: 3, threads: 1}\noptimizer: {lr: 1.0e-3}\n"
                        "checkpoint: {resume: none}\n");
  expect_kill_and_resume_is_exact("sft", config, 1, 40, 2, "sft_epoch");
}

TEST(Distributed, AFailingRankEndsTheWholeJob) {
  const std::string good = write_config("good.yaml", kGrpo);
  const std::string bad = write_config("bad.yaml", kGrpo);
  const std::string dir = (kWork / "failing").string();
  const Result r = run(std::string(GRPO_MPIEXEC) + " --allow-run-as-root --oversubscribe -np 1 " + GRPO_BINARY +
                       " train --config " + good + " trainer.run_dir=" + dir + " trainer.steps=1000 : -np 1 " +
                       GRPO_BINARY + " train --config " + bad + " trainer.run_dir=" + dir + " trainer.steps=1000 data.train_path=/nonexistent/data.jsonl");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_LT(r.seconds, 60);
  EXPECT_NE(r.output.find("rank 1 ERROR"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("/nonexistent/data.jsonl"), std::string::npos) << r.output;
}

// ZeRO stages 1 and 2 (optimizer state, then gradients, split over ranks) train the same model as
// whole-state data parallelism; 3 ranks make the flattened parameters need padding.
TEST(Distributed, ZeroStagesMatchOneRank) {
  const std::string sft = write_config("sft_zero.yaml", kSft), grpo = write_config("grpo_zero.yaml", kGrpo);
  const std::string common = " optimizer.lr=0.1 optimizer.eps=1.0 optimizer.max_grad_norm=0.5";  // clipping active
  for (const auto& [verb, config] : {std::pair<std::string, std::string>{"sft", sft}, {"train", grpo}}) {
    const fs::path reference = kWork / (verb + "_zero_reference");
    Result r = run(testing::mpi_launcher(1) + GRPO_BINARY + " " + verb + " --config " + config + common + " trainer.run_dir=" +
                   reference.string());
    ASSERT_EQ(r.exit_code, 0) << r.output;
    for (const auto& [ranks, stage] : std::vector<std::pair<int, int>>{{2, 1}, {2, 2}, {3, 2}}) {
      if (verb == "train" && ranks == 3) continue;  // 4 prompts per step do not split over 3 ranks evenly
      const fs::path dir = kWork / fmt_name(verb, ranks, stage);
      r = run(testing::mpi_launcher(ranks) + GRPO_BINARY + " " + verb + " --config " + config + common + " trainer.zero_stage=" +
              std::to_string(stage) + " trainer.run_dir=" + dir.string());
      ASSERT_EQ(r.exit_code, 0) << r.output;
      EXPECT_NE(r.output.find("ZeRO stage " + std::to_string(stage)), std::string::npos) << r.output;
      EXPECT_LE(max_difference(final_weights(reference), final_weights(dir)), 1e-6) << verb << " " << ranks << " ranks, stage " << stage;
    }
  }
}

// Six GRPO steps straight on `straight_ranks` ranks against three on `first_ranks` (with
// `first_overrides`) and three more resumed on `resumed_ranks`: the same weights within 1e-6.
void expect_resume_on_another_layout(const std::string& config, const std::string& name, int straight_ranks,
                                     int first_ranks, const std::string& first_overrides, int resumed_ranks,
                                     double tolerance = 1e-6) {
  const fs::path straight = kWork / (name + "_straight"), switched = kWork / name;
  const std::string common = std::string(GRPO_BINARY) + " train --config " + config +
                             " trainer.steps=6 optimizer.lr=0.1 optimizer.eps=1.0 optimizer.schedule=constant"
                             " trainer.run_dir=";
  Result r = run(testing::mpi_launcher(straight_ranks) + common + straight.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run(testing::mpi_launcher(first_ranks) + common + switched.string() + " trainer.steps=3" + first_overrides);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  r = run(testing::mpi_launcher(resumed_ranks) + common + switched.string() + " --resume auto");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("resumed from"), std::string::npos) << r.output;
  EXPECT_LE(max_difference(final_weights(straight), final_weights(switched)), tolerance);
}

// Checkpoints hold whole optimizer moments, so a sharded run resumes exactly, and on another rank
// count and stage.
TEST(Distributed, ShardedCheckpointsResume) {
  const std::string config = write_config("grpo_zero_resume.yaml", kGrpo);
  std::string zero2_yaml = kGrpo;
  zero2_yaml.replace(zero2_yaml.find("threads: 1}"), 11, "threads: 1, zero_stage: 2}");
  const std::string zero2 = write_config("grpo_zero2_resume.yaml", zero2_yaml);
  expect_kill_and_resume_is_exact("train", zero2, 2, 6, 3, "grpo_zero2_kill");

  // 2 ranks at stage 2 for 3 steps, then 1 rank at stage 0 for 3 more, against 1 rank throughout.
  expect_resume_on_another_layout(config, "zero_switch", 1, 2, " trainer.zero_stage=2", 1);
}

// An untied copy of the demo model (a separate lm_head near the embeddings) as a Hugging Face
// directory, from a finished demo run's export.
fs::path untied_model_from(const fs::path& run_dir) {
  const fs::path dir = kWork / "untied_model";
  fs::create_directories(dir);
  for (const char* file : {"tokenizer.json", "tokenizer_config.json"})
    if (fs::exists(run_dir / "final" / file)) fs::copy_file(run_dir / "final" / file, dir / file, fs::copy_options::overwrite_existing);
  std::ifstream in(run_dir / "final" / "config.json");
  nlohmann::json config = nlohmann::json::parse(in);
  config["tie_word_embeddings"] = false;
  std::ofstream(dir / "config.json") << config.dump(2);
  TensorMap weights = final_weights(run_dir);
  at::manual_seed(5);
  const at::Tensor embeddings = weights.at("model.embed_tokens.weight");
  weights["lm_head.weight"] = embeddings + 0.02 * at::randn(embeddings.sizes());
  EXPECT_TRUE(write_safetensors((dir / "model.safetensors").string(), weights).is_ok());
  return dir;
}

// ZeRO-3 (parameters sharded per unit, gathered per pass, gradients reduce-scattered per unit)
// trains the same model as one rank at stage 0: SFT and GRPO, on 1, 2 and 3 ranks, with clipping,
// micro-batches, a tied and an untied head, and GRPO's KL term on (a sharded reference) and off.
TEST(Distributed, ZeroStage3MatchesOneRankAtStage0) {
  // 6 prompts (x 4 samples) split evenly over 1, 2 and 3 ranks, and micro-batches of 2 rows.
  std::string sft_yaml = kSft, grpo_yaml = kGrpo;
  sft_yaml.replace(sft_yaml.find("prompts_per_step: 8"), 19, "prompts_per_step: 6, micro_batch_size: 1");
  grpo_yaml.replace(grpo_yaml.find("prompts_per_step: 4"), 19, "prompts_per_step: 6, micro_batch_size: 2");
  const std::string sft = write_config("sft_zero3.yaml", sft_yaml), grpo = write_config("grpo_zero3.yaml", grpo_yaml);
  const std::string common = " optimizer.lr=0.1 optimizer.eps=1.0 optimizer.max_grad_norm=0.5";  // clipping active
  fs::path untied;
  struct Case {
    std::string verb, config, extra, name;
  };
  std::vector<Case> cases = {{"sft", sft, "", "sft_tied"}, {"train", grpo, "", "grpo_tied_kl"},
                             {"train", grpo, " grpo.kl.beta=0", "grpo_tied_nokl"}};
  for (size_t c = 0; c < cases.size(); ++c) {
    const Case k = cases[c];  // a copy: the untied cases are appended below
    const fs::path reference = kWork / (k.name + "_zero3_reference");
    Result r = run(testing::mpi_launcher(1) + GRPO_BINARY + " " + k.verb + " --config " + k.config + common + k.extra +
                   " trainer.run_dir=" + reference.string());
    ASSERT_EQ(r.exit_code, 0) << r.output;
    if (c == 0) {
      untied = untied_model_from(reference);
      cases.push_back({"sft", sft, " model.path=" + untied.string(), "sft_untied"});
      cases.push_back({"train", grpo, " model.path=" + untied.string(), "grpo_untied_kl"});
    }
    for (int ranks : {1, 2, 3}) {
      const fs::path dir = kWork / (k.name + "_zero3_np" + std::to_string(ranks));
      r = run(testing::mpi_launcher(ranks) + GRPO_BINARY + " " + k.verb + " --config " + k.config + common + k.extra +
              " trainer.zero_stage=3 trainer.run_dir=" + dir.string());
      ASSERT_EQ(r.exit_code, 0) << r.output;
      EXPECT_NE(r.output.find("ZeRO stage 3"), std::string::npos) << r.output;
      EXPECT_LE(max_difference(final_weights(reference), final_weights(dir)), 1e-5) << k.name << ", " << ranks << " ranks";
      if (ranks != 2) continue;
      // Prefetching the next unit's gather moves the same bytes earlier: the same weights, bit for
      // bit, and every prefetched unit is the one asked for next.
      const fs::path prefetched = kWork / (k.name + "_zero3_np2_prefetch");
      r = run(testing::mpi_launcher(ranks) + GRPO_BINARY + " " + k.verb + " --config " + k.config + common + k.extra +
              " trainer.zero_stage=3 trainer.prefetch=on trainer.run_dir=" + prefetched.string());
      ASSERT_EQ(r.exit_code, 0) << r.output;
      EXPECT_EQ(max_difference(final_weights(dir), final_weights(prefetched)), 0.0) << k.name;
      const nlohmann::json last = metrics_by_step(prefetched).rbegin()->second;
      ASSERT_TRUE(last.contains("zero3_prefetch_used")) << last.dump();
      EXPECT_EQ(last["zero3_prefetch_wasted"].get<double>(), 0.0) << k.name;
      if (k.verb == "sft") {
        // 3 steps x 3 micro-batches per rank, each a forward (embedding -> layer 1, each layer ->
        // the next, the last -> the root for the final norm: L + 1) and a backward (each layer ->
        // the one before, layer 1 -> the root for the embedding: L).
        std::ifstream in(prefetched / "final" / "config.json");
        const int64_t layers = nlohmann::json::parse(in)["num_hidden_layers"].get<int64_t>();
        EXPECT_EQ(last["zero3_prefetch_used"].get<double>(), 3.0 * 3.0 * static_cast<double>(2 * layers + 1)) << k.name;
      } else {
        EXPECT_GT(last["zero3_prefetch_used"].get<double>(), 0.0) << k.name;
      }
    }
  }
}

// Stage 3 checkpoints hold whole fp32 parameters and moments, gathered from the shards, so a killed
// 2-rank run resumes bit for bit, and on 3 ranks (resharded on load) within float tolerance.
TEST(Distributed, Stage3ResumesOnTheSameAndAnotherRankCount) {
  std::string yaml = kGrpo;
  yaml.replace(yaml.find("prompts_per_step: 4"), 19, "prompts_per_step: 6, zero_stage: 3");
  const std::string config = write_config("grpo_zero3_resume.yaml", yaml);
  expect_kill_and_resume_is_exact("train", config, 2, 6, 3, "grpo_zero3_kill");

  expect_resume_on_another_layout(config, "zero3_reshard", 2, 2, "", 3);
}

// A stage-3 checkpoint (shards) resumes at stage 0, and a stage-0 one (whole tensors) at stage 3,
// each rank then reading only its slices; stage 3 against stage 0 agree within 1e-5 (float sums in
// another order), as in ZeroStage3MatchesOneRankAtStage0.
TEST(Distributed, StagesResumeEachOthersCheckpoints) {
  std::string yaml = kGrpo;
  yaml.replace(yaml.find("prompts_per_step: 4"), 19, "prompts_per_step: 6");
  const std::string stage0 = write_config("grpo_stage0_switch.yaml", yaml);
  yaml.replace(yaml.find("prompts_per_step: 6"), 19, "prompts_per_step: 6, zero_stage: 3");
  const std::string stage3 = write_config("grpo_stage3_switch.yaml", yaml);
  expect_resume_on_another_layout(stage0, "zero3_then_zero0", 1, 2, " trainer.zero_stage=3", 1, 1e-5);
  expect_resume_on_another_layout(stage3, "zero0_then_zero3", 2, 1, " trainer.zero_stage=0", 3, 1e-5);
}

// A stage-3 checkpoint is one shard file per rank under a manifest with checksums: a corrupt shard
// makes --resume auto fall back to the previous checkpoint (and the run still ends bit for bit
// like an uninterrupted one), and `grpo convert` puts the shards back together into exactly the
// weights the run exported.
TEST(Distributed, Stage3CorruptShardFallsBackAndConvertJoinsTheShards) {
  std::string yaml = kGrpo;
  yaml.replace(yaml.find("prompts_per_step: 4"), 19, "prompts_per_step: 4, zero_stage: 3");
  yaml.replace(yaml.find("every_steps: 0"), 14, "every_steps: 1");
  const std::string config = write_config("grpo_zero3_corrupt.yaml", yaml);
  const fs::path straight = kWork / "zero3_corrupt_straight", broken = kWork / "zero3_corrupt";
  const std::string common = std::string(GRPO_BINARY) + " train --config " + config + " trainer.steps=3 trainer.run_dir=";
  Result r = run(testing::mpi_launcher(2) + common + straight.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const fs::path last = straight / "checkpoints" / "step-3";
  ASSERT_TRUE(fs::exists(last / "shard-0-of-2.safetensors") && fs::exists(last / "shard-1-of-2.safetensors"));
  EXPECT_FALSE(fs::exists(last / "model.safetensors")) << "a stage-3 checkpoint holds shards, not the whole model";
  r = run(std::string(GRPO_BINARY) + " convert --checkpoint " + last.string() + " --output " + (kWork / "zero3_converted").string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  StatusOr<TensorMap> converted = read_safetensors((kWork / "zero3_converted" / "model.safetensors").string());
  ASSERT_TRUE(converted.is_ok()) << converted.status().message();
  EXPECT_EQ(max_difference(final_weights(straight), *converted), 0.0) << "grpo convert of the last checkpoint";

  r = run(testing::mpi_launcher(2) + common + broken.string() + " trainer.steps=2");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const fs::path shard = broken / "checkpoints" / "step-2" / "shard-1-of-2.safetensors";
  {
    std::fstream f(shard, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(0, std::ios::end);
    const std::streamoff size = f.tellg();
    f.seekp(size - 5);
    char c = 0;
    f.seekg(size - 5);
    f.get(c);
    f.seekp(size - 5);
    f.put(static_cast<char>(c ^ 0x5a));
  }
  r = run(testing::mpi_launcher(2) + common + broken.string() + " --resume auto");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("shard-1-of-2.safetensors does not match its checksum"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("resumed from " + (broken / "checkpoints" / "step-1").string()), std::string::npos) << r.output;
  EXPECT_EQ(max_difference(final_weights(straight), final_weights(broken)), 0.0);
}

// Micro-batches (3 rows, so the last one is short) accumulate the whole batch's gradient: with mu = 2
// (old log-probs) and a KL term (reference log-probs) too, on 1 and 2 ranks.
TEST(Distributed, MicroBatchesMatchTheWholeBatch) {
  const std::string sft = write_config("sft_micro.yaml", kSft), grpo = write_config("grpo_micro.yaml", kGrpo);
  const std::string common = " optimizer.lr=0.1 optimizer.eps=1.0 grpo.updates_per_batch=2";
  for (const auto& [verb, config] : {std::pair<std::string, std::string>{"sft", sft}, {"train", grpo}}) {
    const fs::path whole = kWork / (verb + "_micro_whole");
    Result r = run(testing::mpi_launcher(1) + GRPO_BINARY + " " + verb + " --config " + config + common + " trainer.run_dir=" + whole.string());
    ASSERT_EQ(r.exit_code, 0) << r.output;
    for (int ranks : {1, 2}) {
      const fs::path dir = kWork / (verb + "_micro_np" + std::to_string(ranks));
      r = run(testing::mpi_launcher(ranks) + GRPO_BINARY + " " + verb + " --config " + config + common +
              " trainer.micro_batch_size=3 trainer.run_dir=" + dir.string());
      ASSERT_EQ(r.exit_code, 0) << r.output;
      EXPECT_LE(max_difference(final_weights(whole), final_weights(dir)), 1e-6) << verb << ", " << ranks << " ranks";
      if (verb == "train") {
        // The per-token metrics merged over micro-batches equal the whole batch's.
        const auto a = metrics_by_step(whole), b = metrics_by_step(dir);
        for (const auto& [step, m] : a)
          for (const char* key : {"kl", "entropy", "clip_frac", "loss", "reward"})
            EXPECT_NEAR(m[key].get<double>(), b.at(step)[key].get<double>(), 1e-5) << key << " at step " << step;
      }
    }
  }
}

// Completions of varied lengths: a random model hits one of these stop strings after ~7 tokens,
// so ranks pad to different widths, and a length reward that is 0 up to 5 tokens and -1 from 6 on
// splits about half the samples of a group from the other half (some groups score all the same).
const char* kGrpoVariedLengths =
    "model: {path: \"builtin:demo-qwen2\"}\n"
    "data: {train_path: \"builtin:addition?n=64&digits=1-3&seed=5\"}\n"
    "rollout: {max_new_tokens: 40, temperature: 1.0, stop: [\"0\", \"1\", \"2\", \"3\", \"4\", \"5\", \"6\", \"7\", "
    "\"8\", \"9\", \"a\", \"e\", \"i\", \"o\", \"u\", \"s\", \"t\", \"n\", \"r\", \"l\", \"A\", \"E\", \"I\", \"O\", \"S\", "
    "\"T\", \"N\", \"R\", \"L\", \"x\", \"y\", \"z\"]}\n"
    "reward: {functions: [{name: length, options: {max_tokens: 6, buffer: 1}}]}\n"
    "grpo: {group_size: 4, kl: {beta: 0.01}}\n"
    "optimizer: {lr: 0.1, eps: 1.0}\n"
    "trainer: {steps: 1, prompts_per_step: 4, seed: 3, threads: 1}\n"
    "checkpoint: {every_steps: 0, resume: none}\n";

// Every aggregation mode (and the dr_grpo preset, whose seq-mean-token-sum-norm once divided by each
// rank's padded width) trains the same parameters on 2 ranks, with micro-batches, as on 1.
TEST(Distributed, EveryAggregationModeMatchesOneRank) {
  const std::string config = write_config("grpo_aggregation.yaml", kGrpoVariedLengths);
  for (const std::string setting : {"grpo.aggregation.mode=token-mean", "grpo.aggregation.mode=seq-mean-token-sum",
                                    "grpo.aggregation.mode=seq-mean-token-mean",
                                    "grpo.aggregation.mode=seq-mean-token-sum-norm", "grpo.preset=dr_grpo"}) {
    std::map<int, TensorMap> weights;
    for (int ranks : {1, 2}) {
      const fs::path dir = kWork / ("aggregation_np" + std::to_string(ranks));
      fs::remove_all(dir);
      const Result r = run(testing::mpi_launcher(ranks) + GRPO_BINARY + " train --config " + config + " " + setting +
                           " trainer.micro_batch_size=3 trainer.run_dir=" + dir.string());
      ASSERT_EQ(r.exit_code, 0) << r.output;
      weights[ranks] = final_weights(dir);
    }
    EXPECT_LE(max_difference(weights[1], weights[2]), 1e-6) << setting;
  }
}

// DAPO dynamic sampling with refill: steps draw more prompts until 4 groups carry signal, the
// choice is the same on 1 and 2 ranks, and a killed run resumes exactly (the data cursor counts
// every round's prompts).
TEST(Distributed, DynamicSamplingRefillsAndResumesExactly) {
  std::string yaml = kGrpoVariedLengths;
  yaml.replace(yaml.find("grpo: {"), 7, "grpo: {filter_zero_std_groups: true, max_generation_rounds: 4, ");
  const std::string config = write_config("grpo_refill.yaml", yaml);
  std::map<int, TensorMap> weights;
  for (int ranks : {1, 2}) {
    const fs::path dir = kWork / ("refill_np" + std::to_string(ranks));
    const Result r = run(testing::mpi_launcher(ranks) + GRPO_BINARY + " train --config " + config + " trainer.steps=6 trainer.run_dir=" +
                         dir.string());
    ASSERT_EQ(r.exit_code, 0) << r.output;
    weights[ranks] = final_weights(dir);
    int refilled = 0;
    for (const auto& [step, m] : metrics_by_step(dir)) {
      ASSERT_TRUE(m.contains("groups_generated") && m.contains("groups_kept")) << m.dump();
      EXPECT_EQ(m["groups_kept"].get<double>(), 4.0) << "step " << step;
      EXPECT_EQ(m["zero_std_groups"].get<double>(), 0.0) << "step " << step;
      if (m["groups_generated"].get<double>() > 4) ++refilled;
    }
    EXPECT_GT(refilled, 0) << "no step needed a second round; the test does not exercise refill";
  }
  EXPECT_LE(max_difference(weights[1], weights[2]), 1e-6);
  expect_kill_and_resume_is_exact("train", config, 2, 6, 3, "refill_kill");
}

// The sampler/trainer mismatch is logged every step and is ~0 (same model code, fp32); with a
// rollout correction on, on-policy weights are 1 and nothing is rejected; a bound below the
// measured mismatch stops every rank with a message naming the key.
// When the rounds run out with fewer groups with signal than prompts_per_step (here none: an
// untrained model never answers an addition right), the step is filled with flat groups and the
// kept groups are spread evenly, so no rank is left without rows (once a division by zero that
// killed the rank) and, at stage 3, every rank runs the same passes.
TEST(Distributed, DynamicSamplingShortOfSignalLeavesNoRankWithoutRows) {
  std::string yaml = kGrpo;
  yaml.replace(yaml.find("grpo: {"), 7, "grpo: {filter_zero_std_groups: true, max_generation_rounds: 2, ");
  const std::string language_reward = "reward: {functions: [{name: language, options: {language: en, empty_score: 0.0}}]}";
  yaml.replace(yaml.find(language_reward), language_reward.size(), "reward: {functions: [{name: math}]}");
  const std::string config = write_config("grpo_refill_short.yaml", yaml);
  for (const std::string stage : {"0", "3"}) {
    const fs::path dir = kWork / ("refill_short_zero" + stage);
    const Result r = run(testing::mpi_launcher(2) + GRPO_BINARY + " train --config " + config +
                         " trainer.steps=2 trainer.micro_batch_size=2 trainer.zero_stage=" + stage + " trainer.run_dir=" + dir.string());
    ASSERT_EQ(r.exit_code, 0) << r.output;
    const auto metrics = metrics_by_step(dir);
    ASSERT_EQ(metrics.size(), 2u);
    for (const auto& [step, m] : metrics) {
      EXPECT_EQ(m["groups_kept"].get<double>(), 0.0) << "step " << step;
      EXPECT_EQ(m["groups_generated"].get<double>(), 8.0) << "step " << step;  // 2 rounds of 4 prompts
      // Means over the rows trained on (the flat fill), not over the kept groups (none).
      EXPECT_EQ(m["zero_std_groups"].get<double>(), 1.0) << "step " << step;
      EXPECT_GT(m["response_tokens"].get<double>(), 0.0) << "step " << step;
      EXPECT_LE(m["response_tokens"].get<double>(), 20.0) << "step " << step;  // rollout.max_new_tokens
    }
  }
}

TEST(Distributed, LogpMismatchIsLoggedAndBounded) {
  const std::string config = write_config("grpo_mismatch.yaml", kGrpoVariedLengths);
  const fs::path dir = kWork / "mismatch_logged";
  Result r = run(testing::mpi_launcher(2) + GRPO_BINARY + " train --config " + config + " trainer.steps=2 trainer.run_dir=" +
                 dir.string() + " grpo.max_logp_mismatch=1e-4 grpo.updates_per_batch=2 grpo.rollout_correction.level=token"
                 " grpo.rollout_correction.weight_max=2 'grpo.rollout_correction.rejection=[{statistic: seq_max_k3, upper: 1e-3}]'");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const auto metrics = metrics_by_step(dir);
  ASSERT_EQ(metrics.size(), 2u);
  for (const auto& [step, m] : metrics) {
    EXPECT_LE(m.at("mismatch/logp_abs_max").get<double>(), 1e-5) << "step " << step;
    EXPECT_LE(m.at("mismatch/logp_abs_mean").get<double>(), 2e-6) << "step " << step;
    EXPECT_GE(m.at("mismatch/kl").get<double>(), 0.0) << "step " << step;
    EXPECT_NEAR(m.at("correction/weight_mean").get<double>(), 1.0, 1e-4) << "step " << step;
    EXPECT_EQ(m.at("correction/rejected_frac").get<double>(), 0.0) << "step " << step;
  }

  // A step where no group carries signal (an untrained model never writes the R1 format) makes no
  // update but still measures the mismatch.
  const fs::path flat = kWork / "mismatch_no_signal";
  r = run(testing::mpi_launcher(2) + GRPO_BINARY + " train --config " + config + " trainer.steps=1 'reward.functions=[{name: format}]'" +
          " trainer.run_dir=" + flat.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const nlohmann::json no_signal = metrics_by_step(flat).at(1);
  EXPECT_EQ(no_signal.at("zero_std_groups").get<double>(), 1.0) << no_signal.dump();
  EXPECT_LE(no_signal.at("mismatch/logp_abs_max").get<double>(), 1e-5) << no_signal.dump();

  r = run(testing::mpi_launcher(2) + GRPO_BINARY + " train --config " + config + " trainer.steps=2 trainer.run_dir=" +
          (kWork / "mismatch_bound").string() + " grpo.max_logp_mismatch=1e-12");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_LT(r.seconds, 60);
  EXPECT_NE(r.output.find("above grpo.max_logp_mismatch = 1e-12"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace grpo
