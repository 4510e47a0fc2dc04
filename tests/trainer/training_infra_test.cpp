// Checkpoints, TensorBoard records, data order and the synthetic task.

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>

#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "core/config.h"
#include "core/crc32c.h"
#include "trainer/checkpoint.h"
#include "trainer/data.h"
#include "trainer/metrics.h"
#include "trainer/policy.h"
#include "trainer/train_common.h"
#include "trainer/trainers.h"

namespace grpo {
namespace {

namespace fs = std::filesystem;

fs::path fresh_dir(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("grpo_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

TEST(Crc32c, KnownVectors) {
  EXPECT_EQ(crc32c("123456789"), 0xE3069283u);  // the standard check value of CRC-32C
  EXPECT_EQ(crc32c(""), 0u);
}

uint64_t read_u64(const std::string& s, size_t pos) {
  uint64_t v = 0;
  std::memcpy(&v, s.data() + pos, 8);
  return v;
}
uint32_t read_u32(const std::string& s, size_t pos) {
  uint32_t v = 0;
  std::memcpy(&v, s.data() + pos, 4);
  return v;
}

// Reads the event file back: every record's framing and both CRCs, and the scalar it carries.
TEST(TensorBoard, RecordsAreFramedWithValidCrcs) {
  const fs::path dir = fresh_dir("tb");
  std::string path;
  {
    TensorBoardWriter writer(dir.string());
    writer.add_scalars(7, {{"reward", 0.25}, {"kl", 0.5}});
    path = writer.path();
  }
  StatusOr<std::string> bytes = read_file(path);
  ASSERT_TRUE(bytes.is_ok());
  size_t pos = 0;
  int records = 0;
  std::string last_payload;
  while (pos < bytes->size()) {
    ASSERT_LE(pos + 12, bytes->size());
    const uint64_t length = read_u64(*bytes, pos);
    EXPECT_EQ(read_u32(*bytes, pos + 8), masked_crc32c(crc32c(bytes->data() + pos, 8)));
    ASSERT_LE(pos + 12 + length + 4, bytes->size());
    last_payload = bytes->substr(pos + 12, length);
    EXPECT_EQ(read_u32(*bytes, pos + 12 + length), masked_crc32c(crc32c(last_payload)));
    pos += 12 + length + 4;
    ++records;
  }
  EXPECT_EQ(records, 2);  // file_version, then one summary
  EXPECT_NE(last_payload.find("reward"), std::string::npos);
  const float quarter = 0.25f;
  EXPECT_NE(last_payload.find(std::string(reinterpret_cast<const char*>(&quarter), 4)), std::string::npos);
  fs::remove_all(dir);
}

CheckpointContents sample_checkpoint(int64_t step) {
  CheckpointContents c;
  c.step = step;
  c.model["w"] = at::arange(6, at::kFloat).view({2, 3}) * static_cast<float>(step);
  c.optimizer["exp_avg.w"] = at::ones({2, 3});
  c.state = {{"data", {{"epoch", 1}, {"position", 3}}}};
  c.files["config.json"] = "{}";
  return c;
}

TEST(Checkpoint, RoundTripsVerifiesAndKeepsTheNewest) {
  const fs::path dir = fresh_dir("ckpt");
  for (int64_t step : {1, 2, 3}) ASSERT_TRUE(save_checkpoint(dir.string(), sample_checkpoint(step), 2).is_ok());
  EXPECT_FALSE(fs::exists(dir / "step-1"));  // keep_last = 2
  StatusOr<CheckpointContents> loaded = load_checkpoint((dir / "step-3").string());
  ASSERT_TRUE(loaded.is_ok()) << loaded.status().message();
  EXPECT_EQ(loaded->step, 3);
  EXPECT_TRUE(at::equal(loaded->model.at("w"), sample_checkpoint(3).model.at("w")));
  EXPECT_EQ(loaded->state["data"]["position"], 3);

  // Corrupt one byte of step-3's weights: it is reported and step-2 is used instead.
  {
    std::fstream f(dir / "step-3" / "model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-1, std::ios::end);
    f.put('\x7f');
  }
  std::vector<std::string> skipped;
  std::string from;
  auto latest = load_latest_checkpoint(dir.string(), &skipped, &from);
  ASSERT_TRUE(latest.has_value());
  EXPECT_EQ(latest->step, 2);
  ASSERT_EQ(skipped.size(), 1u);
  EXPECT_NE(skipped[0].find("model.safetensors does not match its checksum"), std::string::npos) << skipped[0];

  // A directory without a manifest (a crash mid-write) is incomplete and skipped.
  fs::create_directories(dir / "step-9");
  std::ofstream(dir / "step-9" / "model.safetensors") << "partial";
  skipped.clear();
  latest = load_latest_checkpoint(dir.string(), &skipped);
  EXPECT_EQ(latest->step, 2);
  EXPECT_NE(skipped[0].find("no manifest.json"), std::string::npos);
  fs::remove_all(dir);
}

// Issue 9.1: an earlier run's higher-numbered checkpoint made retention delete each new one.
TEST(Checkpoint, RetentionNeverRemovesTheCheckpointJustWritten) {
  const fs::path dir = fresh_dir("ckpt_retention");
  ASSERT_TRUE(save_checkpoint(dir.string(), sample_checkpoint(50), 1).is_ok());
  for (int64_t step : {1, 2, 3}) {
    ASSERT_TRUE(save_checkpoint(dir.string(), sample_checkpoint(step), 2).is_ok());
    EXPECT_TRUE(fs::exists(dir / ("step-" + std::to_string(step)) / "manifest.json")) << "step-" << step << " removed";
  }
  EXPECT_FALSE(fs::exists(dir / "step-1"));  // keep_last = 2 among the steps up to 3
  EXPECT_TRUE(fs::exists(dir / "step-2"));
  EXPECT_TRUE(fs::exists(dir / "step-50"));  // not this timeline's to remove

  // A run starting at step 3 sets the later one aside: no longer listed, loaded or removed.
  StatusOr<std::vector<std::string>> moved = set_aside_checkpoints_after(dir.string(), 3);
  ASSERT_TRUE(moved.is_ok()) << moved.status().message();
  ASSERT_EQ(moved->size(), 1u);
  EXPECT_NE((*moved)[0].find("step-50 -> "), std::string::npos) << (*moved)[0];
  EXPECT_EQ(checkpoint_steps(dir.string()), (std::vector<int64_t>{2, 3}));
  auto latest = load_latest_checkpoint(dir.string(), nullptr);
  ASSERT_TRUE(latest.has_value());
  EXPECT_EQ(latest->step, 3);
  ASSERT_TRUE(save_checkpoint(dir.string(), sample_checkpoint(4), 1).is_ok());
  EXPECT_EQ(checkpoint_steps(dir.string()), (std::vector<int64_t>{4}));
  size_t set_aside = 0;
  for (const auto& entry : fs::directory_iterator(dir)) set_aside += entry.path().filename().string().rfind("step-50.set-aside-", 0) == 0;
  EXPECT_EQ(set_aside, 1u);
  fs::remove_all(dir);
}

// Issue 9.4 (keep): a checkpoint that cannot be written is an error, the earlier checkpoints stay
// loadable, and no partial copy is left taking space.
TEST(Checkpoint, AFailedWriteIsAnErrorAndLeavesNothingBehind) {
  const fs::path dir = fresh_dir("ckpt_fail");
  ASSERT_TRUE(save_checkpoint(dir.string(), sample_checkpoint(1), 3).is_ok());
  CheckpointContents broken = sample_checkpoint(2);
  broken.files["no_such_directory/tokenizer.json"] = "{}";  // its write fails, as on a full disk
  const Status s = save_checkpoint(dir.string(), broken, 3);
  EXPECT_FALSE(s.is_ok());
  EXPECT_NE(s.message().find("no_such_directory/tokenizer.json"), std::string::npos) << s.message();
  std::vector<std::string> left;
  for (const auto& entry : fs::directory_iterator(dir)) left.push_back(entry.path().filename().string());
  EXPECT_EQ(left, std::vector<std::string>{"step-1"});
  auto latest = load_latest_checkpoint(dir.string(), nullptr);
  ASSERT_TRUE(latest.has_value());
  EXPECT_EQ(latest->step, 1);
  fs::remove_all(dir);
}

// Issue 9.5: a manifest field of the wrong type threw out of load_checkpoint and aborted the run.
TEST(Checkpoint, WronglyTypedManifestFieldIsSkippedAsCorrupt) {
  const fs::path dir = fresh_dir("ckpt_typed");
  for (int64_t step : {1, 2}) ASSERT_TRUE(save_checkpoint(dir.string(), sample_checkpoint(step), 3).is_ok());
  for (const char* field : {"bytes", "crc32c"}) {
    StatusOr<std::string> text = read_file((dir / "step-2" / "manifest.json").string());
    ASSERT_TRUE(text.is_ok());
    nlohmann::json manifest = nlohmann::json::parse(*text);
    nlohmann::json damaged = manifest;
    damaged["files"]["model.safetensors"][field] = "twelve";
    ASSERT_TRUE(write_file_atomic((dir / "step-2" / "manifest.json").string(), damaged.dump()).is_ok());
    std::vector<std::string> skipped;
    std::optional<CheckpointContents> latest;
    ASSERT_NO_THROW(latest = load_latest_checkpoint(dir.string(), &skipped)) << field;
    ASSERT_TRUE(latest.has_value());
    EXPECT_EQ(latest->step, 1) << field;
    ASSERT_EQ(skipped.size(), 1u);
    EXPECT_NE(skipped[0].find("step-2"), std::string::npos) << skipped[0];
    EXPECT_NE(skipped[0].find("model.safetensors"), std::string::npos) << skipped[0];
    ASSERT_TRUE(write_file_atomic((dir / "step-2" / "manifest.json").string(), manifest.dump()).is_ok());
  }
  fs::remove_all(dir);
}

TEST(Checkpoint, ChangedEssentialsNameOldAndNewValues) {
  Config before, now;
  before.model.path = "models/a";
  now.model.path = "models/b";
  before.optimizer.lr = 1e-6;
  now.optimizer.lr = 2e-6;
  now.grpo.group_size = before.grpo.group_size * 2;
  now.distill.teacher_path = "runs/teacher/final";
  const std::vector<std::string> changed = changed_essentials(before, now);
  ASSERT_EQ(changed.size(), 4u);
  EXPECT_EQ(changed[0], "model.path: models/a -> models/b");
  EXPECT_EQ(changed[1], "grpo.group_size: 8 -> 16");
  EXPECT_EQ(changed[2], "optimizer.lr: 1e-06 -> 2e-06");
  EXPECT_EQ(changed[3], "distill.teacher_path:  -> runs/teacher/final");
  EXPECT_TRUE(changed_essentials(before, before).empty());
}

std::vector<int64_t> jsonl_steps(const fs::path& path) {
  std::vector<int64_t> steps;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) steps.push_back(nlohmann::json::parse(line).at("step").get<int64_t>());
  return steps;
}

// The steps of every event in every event file of `dir` (framing as in the test above; the step
// is the Event's field 2, a varint right after the 9-byte wall_time).
std::vector<int64_t> event_steps(const fs::path& dir) {
  std::vector<int64_t> steps;
  for (const auto& entry : fs::directory_iterator(dir)) {
    const std::string bytes = *read_file(entry.path().string());
    for (size_t pos = 0; pos + 12 <= bytes.size();) {
      const uint64_t length = read_u64(bytes, pos);
      const std::string payload = bytes.substr(pos + 12, length);
      EXPECT_EQ(payload[9], '\x10');  // field 2, varint
      int64_t step = 0;
      for (size_t i = 10, shift = 0; i < payload.size(); ++i, shift += 7) {
        step |= static_cast<int64_t>(payload[i] & 0x7F) << shift;
        if (!(payload[i] & 0x80)) break;
      }
      steps.push_back(step);
      pos += 12 + length + 4;
    }
  }
  std::sort(steps.begin(), steps.end());
  return steps;
}

nlohmann::json sample_row(int64_t step, const std::string& completion) {
  nlohmann::json row = nlohmann::json::object();
  row["step"] = step;
  row["completion"] = completion;
  return row;
}

// Issue 9.3: rows logged after the checkpoint a run resumes from appeared twice.
TEST(Metrics, AWriterStartingAtAStepDropsLaterRows) {
  const fs::path dir = fresh_dir("metrics_trim");
  {
    MetricsWriter first(dir.string(), 0);
    for (int64_t step = 1; step <= 5; ++step) {
      first.log(step, {{"reward", 0.1 * static_cast<double>(step)}});
      first.log_samples({sample_row(step, "a"), sample_row(step, "b")});
    }
  }
  std::ofstream(dir / "metrics.jsonl", std::ios::app) << "{\"step\": 6, \"rew";  // torn by a kill
  MetricsWriter resumed(dir.string(), 3);
  for (int64_t step = 4; step <= 6; ++step) {
    resumed.log(step, {{"reward", 1.0}});
    resumed.log_samples({sample_row(step, "c")});
  }
  EXPECT_EQ(jsonl_steps(dir / "metrics.jsonl"), (std::vector<int64_t>{1, 2, 3, 4, 5, 6}));
  EXPECT_EQ(jsonl_steps(dir / "samples.jsonl"), (std::vector<int64_t>{1, 1, 2, 2, 3, 3, 4, 5, 6}));
  // Two event files (one per writer), each opening with a file_version event at step 0.
  EXPECT_EQ(event_steps(dir / "tensorboard"), (std::vector<int64_t>{0, 0, 1, 2, 3, 4, 5, 6}));
  fs::remove_all(dir);
}

// Issue 9.4: a full disk left metrics.jsonl empty with no word. /dev/full fails every write with
// ENOSPC, as a full disk does.
TEST(Metrics, FailedWritesWarnOnceThenStopTheRun) {
  if (!fs::exists("/dev/full")) GTEST_SKIP() << "no /dev/full";
  for (const char* name : {"metrics.jsonl", "samples.jsonl"}) {
    const fs::path dir = fresh_dir("metrics_full");
    fs::create_symlink("/dev/full", dir / name);
    MetricsWriter writer(dir.string(), 0);
    for (int64_t step = 1; step < kFailedWritesBeforeError; ++step) {
      EXPECT_NO_THROW(writer.log(step, {{"reward", 1.0}})) << name;
      EXPECT_NO_THROW(writer.log_samples({sample_row(step, "a")})) << name;
    }
    try {
      writer.log(kFailedWritesBeforeError, {{"reward", 1.0}});
      writer.log_samples({sample_row(kFailedWritesBeforeError, "a")});
      ADD_FAILURE() << name << ": persistent write failures were ignored";
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("No space left on device"), std::string::npos) << e.what();
    }
    fs::remove_all(dir);
  }
}

// A step's prompts are cut over the ranks before anything is loaded: fewer prompts than ranks
// (once an undefined tensor or an integer division by zero mid-step), and at stage 3 rows that
// split into different numbers of micro-batches, are refused with the keys and the numbers.
TEST(StepSplit, FewerPromptsThanRanksAndUnevenStage3PassesAreRefused) {
  auto message = [](const TrainerConfig& t, int64_t rows_per_item, int64_t ranks, bool passes_matter = true) {
    try {
      check_step_split(t, rows_per_item, ranks, "ranks", passes_matter);
    } catch (const std::runtime_error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  TrainerConfig t;
  t.prompts_per_step = 2;
  EXPECT_NE(message(t, 4, 3).find("trainer.prompts_per_step 2 is fewer than the 3 ranks"), std::string::npos);
  EXPECT_EQ(message(t, 4, 2), "");
  t.prompts_per_step = 6;
  t.zero_stage = 3;
  t.micro_batch_size = 4;
  // 6 prompts over 4 ranks: 1, 2, 1, 2 prompts of 4 samples, so 4, 8, 4, 8 rows and 1, 2, 1, 2 passes.
  const std::string uneven = message(t, 4, 4);
  EXPECT_NE(uneven.find("gives them 4, 8, 4, 8 rows"), std::string::npos) << uneven;
  EXPECT_NE(uneven.find("1, 2, 1, 2 passes"), std::string::npos) << uneven;
  EXPECT_EQ(message(t, 4, 4, /*passes_matter=*/false), "");  // ranks that only generate
  t.micro_batch_size = 8;  // one pass each
  EXPECT_EQ(message(t, 4, 4), "");
  t.micro_batch_size = 4;
  t.zero_stage = 2;  // only stage 3 gathers per pass
  EXPECT_EQ(message(t, 4, 4), "");
  t.zero_stage = 3;
  t.prompts_per_step = 8;
  EXPECT_EQ(message(t, 4, 4), "");
}

TEST(Data, AdditionExamplesAreCorrectWorkedSolutions) {
  const auto examples = make_addition_examples(200, 1, 5, 3);
  for (const Example& e : examples) {
    const auto plus = e.prompt.find('+');
    const long long a = std::stoll(e.prompt.substr(0, plus)), b = std::stoll(e.prompt.substr(plus + 1));
    EXPECT_EQ(e.answer, std::to_string(a + b));
    EXPECT_EQ(e.response.rfind("<think>", 0), 0u);
    EXPECT_NE(e.response.find("<answer>" + e.answer + "</answer>"), std::string::npos);
  }
  EXPECT_EQ(make_addition_examples(5, 2, 2, 9)[0].prompt, make_addition_examples(5, 2, 2, 9)[0].prompt);  // seeded
}

TEST(Data, OrderCrossesEpochsAndResumesExactly) {
  DataOrder a(10, 4, true);
  std::vector<int64_t> first = a.next(7), second = a.next(7);  // crosses into epoch 1
  EXPECT_EQ(a.epoch(), 1);
  std::vector<int64_t> epoch0(first);
  epoch0.insert(epoch0.end(), second.begin(), second.begin() + 3);
  std::sort(epoch0.begin(), epoch0.end());
  for (int64_t i = 0; i < 10; ++i) EXPECT_EQ(epoch0[static_cast<size_t>(i)], i);  // a permutation
  DataOrder b(10, 4, true);
  b.restore(a.cursor());
  EXPECT_EQ(a.next(12), b.next(12));
}

TEST(Data, JsonlMappingAndMalformedLines) {
  const fs::path dir = fresh_dir("data");
  const std::string path = (dir / "d.jsonl").string();
  std::ofstream(path) << "{\"question\": \"1+1?\", \"answer\": \"so 2\\n#### 2\"}\n{bad\n{\"question\": \"2+2?\", \"answer\": \"#### 4\"}\n";
  DataConfig mapping;
  mapping.prompt_field = "question";
  StatusOr<Dataset> strict = load_dataset(path, mapping);
  ASSERT_FALSE(strict.is_ok());
  EXPECT_NE(strict.status().message().find(path + ":2:"), std::string::npos) << strict.status().message();
  mapping.skip_malformed = true;
  StatusOr<Dataset> lenient = load_dataset(path, mapping);
  ASSERT_TRUE(lenient.is_ok());
  EXPECT_EQ(lenient->examples.size(), 2u);
  EXPECT_EQ(lenient->skipped_lines, 1);
  EXPECT_EQ(lenient->examples[1].prompt, "2+2?");
  EXPECT_FALSE(load_dataset("builtin:addition?n=5&colour=red", mapping).is_ok());
  fs::remove_all(dir);
}

TEST(Data, Gsm8kAndMathLoadWithAFieldMapping) {
  DataConfig gsm8k;
  gsm8k.prompt_field = "question";
  StatusOr<Dataset> g = load_dataset(std::string(GRPO_SHARED_DIR) + "/data/gsm8k/test.jsonl", gsm8k);
  ASSERT_TRUE(g.is_ok()) << g.status().message();
  EXPECT_GT(g->examples.size(), 1000u);
  EXPECT_NE(g->examples[0].answer.find("####"), std::string::npos);
  DataConfig math;
  math.prompt_field = "problem";
  StatusOr<Dataset> m = load_dataset(std::string(GRPO_SHARED_DIR) + "/data/math500/test.jsonl", math);
  ASSERT_TRUE(m.is_ok()) << m.status().message();
  EXPECT_EQ(m->examples.size(), 500u);
}

TEST(Eval, PassAtKIsTheUnbiasedEstimator) {
  EXPECT_DOUBLE_EQ(pass_at_k(4, 0, 4), 0.0);
  EXPECT_DOUBLE_EQ(pass_at_k(4, 1, 4), 1.0);
  EXPECT_DOUBLE_EQ(pass_at_k(4, 1, 1), 0.25);
  EXPECT_NEAR(pass_at_k(10, 3, 2), 1.0 - (7.0 * 6.0) / (10.0 * 9.0), 1e-12);  // 1 - C(7,2)/C(10,2)
}

// Training and evaluation build their sampling options from rollout.* through one function, so
// eval no longer drops stop strings, top-k or min-p (it used to fill its options by hand).
TEST(GenerationOptions, CarryEveryRolloutSettingAndThePolicysTokens) {
  RolloutConfig rollout;
  rollout.max_new_tokens = 77;
  rollout.temperature = 0.6;
  rollout.top_p = 0.95;
  rollout.top_k = 20;
  rollout.min_p = 0.05;
  rollout.stop = {"</answer>"};
  rollout.max_concurrent_prompts = 5;
  rollout.readback_interval = 3;
  Policy policy;
  policy.stop_token_ids = {7, 9};
  policy.pad_id = 4;
  const GenerationOptions o = generation_options(rollout, policy, 6);
  EXPECT_EQ(o.max_new_tokens, 77);
  EXPECT_DOUBLE_EQ(o.sampling.temperature, 0.6);
  EXPECT_DOUBLE_EQ(o.sampling.top_p, 0.95);
  EXPECT_EQ(o.sampling.top_k, 20);
  EXPECT_DOUBLE_EQ(o.sampling.min_p, 0.05);
  EXPECT_EQ(o.stop_strings, rollout.stop);
  EXPECT_EQ(o.stop_token_ids, policy.stop_token_ids);
  EXPECT_EQ(o.pad_id, 4);
  EXPECT_EQ(o.group_size, 6);
  EXPECT_EQ(o.max_concurrent_prompts, 5);
  EXPECT_EQ(o.readback_interval, 3);
}

}  // namespace
}  // namespace grpo
