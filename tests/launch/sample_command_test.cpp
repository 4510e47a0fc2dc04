// `grpo sample` with the real binary on the built-in demo model and addition prompts: the SFT set
// it writes (schema, provenance, order, counts), the per-prompt cap and deduplication, resuming a
// killed run without duplicates, 2 ranks = 1 rank, and refusing to mix settings.

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "tests/support/run_command.h"

namespace grpo {
namespace {

namespace fs = std::filesystem;

const fs::path kWork = fs::temp_directory_path() / ("grpo_sample_" + std::to_string(::getpid()));

// A random demo model writes gibberish that never stops within 8 tokens, so truncated samples are
// kept here; the filters that need a trained model are tested in rejection_sampling_test.
const char* kSample =
    "model: {path: \"builtin:demo-qwen2\"}\n"
    "data: {train_path: \"builtin:addition?n=7&digits=1-3&seed=5\"}\n"
    "rollout: {max_new_tokens: 8, temperature: 1.0}\n"
    "reward:\n"
    "  functions:\n"
    "    - {name: math}\n"
    "    - {name: format, weight: 0.1}\n"
    "sample: {samples_per_prompt: 4, max_kept_per_prompt: 2, prompts_per_part: 2, drop_truncated: false}\n"
    "trainer: {seed: 11, threads: 1}\n";

std::string config_file(const std::string& name, const char* body) {
  fs::create_directories(kWork);
  const fs::path path = kWork / name;
  std::ofstream(path) << body;
  return path.string();
}

testing::CommandResult grpo(const std::string& args) {
  return testing::run_command("timeout 120 " + std::string(GRPO_BINARY) + " " + args);
}
testing::CommandResult grpo_on_ranks(int ranks, const std::string& args) {
  return testing::run_command("timeout 120 " + testing::mpi_launcher(ranks) + GRPO_BINARY + " " + args);
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::vector<nlohmann::json> read_jsonl(const fs::path& path) {
  std::vector<nlohmann::json> records;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) records.push_back(nlohmann::json::parse(line));
  return records;
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// One uninterrupted one-rank run of kSample: the reference the other runs must equal.
const fs::path& reference_run() {
  static const fs::path dir = [] {
    const fs::path d = kWork / "reference";
    const testing::CommandResult r = grpo("sample --config " + config_file("sample.yaml", kSample) +
                                          " trainer.run_dir=" + d.string());
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return d;
  }();
  return dir;
}

TEST(SampleCommand, WritesAnSftSetWithProvenanceCountsAndACompletionMarker) {
  const fs::path& dir = reference_run();
  const std::vector<nlohmann::json> records = read_jsonl(dir / "samples.jsonl");
  ASSERT_FALSE(records.empty());
  std::map<int64_t, int64_t> per_prompt;
  int64_t last_prompt = -1, last_sample = -1;
  for (const nlohmann::json& r : records) {
    for (const char* key : {"id", "prompt", "response", "answer", "provenance"}) ASSERT_TRUE(r.contains(key)) << key << r;
    // The gold answer is the sum the prompt asks for.
    const std::string prompt = r.at("prompt");
    const auto plus = prompt.find('+');
    ASSERT_NE(plus, std::string::npos) << prompt;
    EXPECT_EQ(r.at("answer").get<std::string>(),
              std::to_string(std::stoll(prompt.substr(0, plus)) + std::stoll(prompt.substr(plus + 1))));
    const nlohmann::json& p = r.at("provenance");
    EXPECT_EQ(p.at("checkpoint"), "builtin:demo-qwen2");
    EXPECT_EQ(p.at("seed"), 11);
    EXPECT_EQ(r.at("id").get<std::string>(),
              p.at("prompt_id").get<std::string>() + "#" + std::to_string(p.at("sample_index").get<int64_t>()));
    EXPECT_TRUE(p.at("rewards").contains("math") && p.at("rewards").contains("format")) << p;
    EXPECT_NEAR(p.at("total_reward").get<double>(),
                p.at("rewards").at("math").get<double>() + 0.1 * p.at("rewards").at("format").get<double>(), 1e-12);
    EXPECT_LE(p.at("completion_tokens").get<int64_t>(), 8);
    const int64_t prompt_index = p.at("prompt_index"), sample_index = p.at("sample_index");
    EXPECT_GE(sample_index, 0);
    EXPECT_LT(sample_index, 4);
    // Prompt order, then sample order.
    EXPECT_TRUE(prompt_index > last_prompt || (prompt_index == last_prompt && sample_index > last_sample)) << r;
    last_prompt = prompt_index;
    last_sample = sample_index;
    ++per_prompt[prompt_index];
  }
  // Random samples of 8 tokens pass every configured filter and never repeat, so the cap decides:
  // 2 of each prompt's 4 are kept and 2 dropped as over the cap.
  EXPECT_EQ(per_prompt.size(), 7u);
  for (const auto& [prompt, kept] : per_prompt) EXPECT_EQ(kept, 2) << "prompt " << prompt;

  const nlohmann::json stats = nlohmann::json::parse(read_text(dir / "sample_stats.json")).at("stats");
  EXPECT_EQ(stats.at("prompts"), 7);
  EXPECT_EQ(stats.at("generated"), 28);
  EXPECT_EQ(stats.at("kept").get<int64_t>(), static_cast<int64_t>(records.size()));
  int64_t dropped = 0;
  for (const auto& [reason, count] : stats.at("dropped").items()) dropped += count.get<int64_t>();
  EXPECT_EQ(stats.at("kept").get<int64_t>() + dropped, stats.at("generated").get<int64_t>());
  EXPECT_EQ(stats.at("dropped").at("over_cap"), 14);

  const nlohmann::json marker = nlohmann::json::parse(read_text(dir / "COMPLETE"));
  EXPECT_EQ(marker.at("verb"), "sample");
  EXPECT_EQ(marker.at("outputs").at("samples"), (dir / "samples.jsonl").string());
  EXPECT_FALSE(marker.at("finished").get<std::string>().empty());

  // The set is what `grpo sft` reads.
  const fs::path sft_dir = kWork / "sft-on-samples";
  const testing::CommandResult sft = grpo("sft --config " + config_file("sample.yaml", kSample) + " trainer.run_dir=" +
                                          sft_dir.string() + " data.train_path=" + (dir / "samples.jsonl").string() +
                                          " trainer.steps=1 trainer.prompts_per_step=4");
  EXPECT_EQ(sft.exit_code, 0) << sft.output;
}

TEST(SampleCommand, GreedySamplesOfAPromptAreOneSampleAfterDeduplication) {
  const fs::path dir = kWork / "greedy";
  const testing::CommandResult r = grpo("sample --config " + config_file("sample.yaml", kSample) + " trainer.run_dir=" +
                                        dir.string() + " rollout.temperature=0 sample.samples_per_prompt=3");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const std::vector<nlohmann::json> records = read_jsonl(dir / "samples.jsonl");
  ASSERT_EQ(records.size(), 7u);  // greedy decoding repeats itself exactly: one per prompt survives
  for (const nlohmann::json& record : records) EXPECT_EQ(record.at("provenance").at("sample_index"), 0);
  const nlohmann::json stats = nlohmann::json::parse(read_text(dir / "sample_stats.json")).at("stats");
  EXPECT_EQ(stats.at("dropped").at("duplicate"), 14);
  EXPECT_TRUE(contains(r.output, "dropped: duplicate")) << r.output;
}

TEST(SampleCommand, TwoRanksWriteWhatOneRankWrites) {
  const fs::path dir = kWork / "two-ranks";
  const testing::CommandResult r =
      grpo_on_ranks(2, "sample --config " + config_file("sample.yaml", kSample) + " trainer.run_dir=" + dir.string());
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(read_text(dir / "samples.jsonl"), read_text(reference_run() / "samples.jsonl"));
  EXPECT_EQ(nlohmann::json::parse(read_text(dir / "sample_stats.json")).at("stats"),
            nlohmann::json::parse(read_text(reference_run() / "sample_stats.json")).at("stats"));
}

TEST(SampleCommand, MissingPartsAreSampledAgainAndTheRestReused) {
  const fs::path dir = kWork / "partial";
  const std::string args = "sample --config " + config_file("sample.yaml", kSample) + " trainer.run_dir=" + dir.string();
  testing::CommandResult r = grpo(args);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  // As a killed run leaves it: some parts written, no merged output, no marker.
  fs::remove(dir / "sample_parts" / "part-000001.json");
  fs::remove(dir / "sample_parts" / "part-000003.json");
  fs::remove(dir / "samples.jsonl");
  fs::remove(dir / "COMPLETE");
  r = grpo_on_ranks(2, args);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_TRUE(contains(r.output, "4 parts (2 from an earlier attempt)")) << r.output;
  EXPECT_EQ(read_text(dir / "samples.jsonl"), read_text(reference_run() / "samples.jsonl"));
  EXPECT_TRUE(fs::exists(dir / "COMPLETE"));
}

TEST(SampleCommand, AKilledRunContinuesWithoutDuplicates) {
  const std::string config = config_file("sample.yaml", kSample);
  const fs::path dir = kWork / "killed";
  // One prompt per part and longer samples, so the run is surely killed between parts.
  const std::vector<std::string> overrides = {"trainer.run_dir=" + dir.string(), "sample.prompts_per_part=1",
                                              "data.train_path=builtin:addition?n=24&digits=1-3&seed=5",
                                              "rollout.max_new_tokens=32"};
  const pid_t child = ::fork();
  if (child == 0) {
    const int quiet = ::open("/dev/null", O_WRONLY);
    ::dup2(quiet, 1);
    ::dup2(quiet, 2);
    std::vector<const char*> argv = {GRPO_BINARY, "sample", "--config", config.c_str()};
    for (const std::string& o : overrides) argv.push_back(o.c_str());
    argv.push_back(nullptr);
    ::execv(GRPO_BINARY, const_cast<char* const*>(argv.data()));
    ::_exit(127);
  }
  const fs::path first_part = dir / "sample_parts" / "part-000000.json";
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline && !fs::exists(first_part))
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  ASSERT_TRUE(fs::exists(first_part)) << "the run wrote no part";
  ASSERT_FALSE(fs::exists(dir / "COMPLETE")) << "the run finished before it was killed";
  ASSERT_FALSE(fs::exists(dir / "sample_parts" / "part-000023.json"));

  std::string args = "sample --config " + config;
  for (const std::string& o : overrides) args += " '" + o + "'";
  const testing::CommandResult resumed = grpo(args);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_FALSE(contains(resumed.output, "(0 from an earlier attempt)")) << resumed.output;

  const fs::path whole = kWork / "unkilled";
  const testing::CommandResult uninterrupted =
      grpo(args + " trainer.run_dir=" + whole.string());  // the later override wins
  ASSERT_EQ(uninterrupted.exit_code, 0) << uninterrupted.output;
  const std::string output = read_text(dir / "samples.jsonl");
  EXPECT_EQ(output, read_text(whole / "samples.jsonl"));
  std::set<std::string> ids;
  for (const nlohmann::json& r : read_jsonl(dir / "samples.jsonl"))
    EXPECT_TRUE(ids.insert(r.at("id").get<std::string>()).second) << "duplicate " << r.at("id");
  EXPECT_EQ(nlohmann::json::parse(read_text(dir / "sample_stats.json")).at("stats").at("prompts"), 24);
}

TEST(SampleCommand, PartsOfOtherSettingsAreRefusedUnlessOverwritten) {
  const fs::path dir = kWork / "settings";
  const std::string args = "sample --config " + config_file("sample.yaml", kSample) + " trainer.run_dir=" + dir.string();
  ASSERT_EQ(grpo(args).exit_code, 0);
  testing::CommandResult r = grpo(args + " sample.samples_per_prompt=5");
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_TRUE(contains(r.output, "other settings")) << r.output;
  EXPECT_TRUE(contains(r.output, "samples_per_prompt: 4")) << r.output;
  EXPECT_TRUE(contains(r.output, "--overwrite")) << r.output;
  EXPECT_TRUE(fs::exists(dir / "COMPLETE")) << "a refused run must leave the finished one as it was";
  r = grpo(args + " sample.samples_per_prompt=5 --overwrite");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  const nlohmann::json stats = nlohmann::json::parse(read_text(dir / "sample_stats.json")).at("stats");
  EXPECT_EQ(stats.at("generated"), 35);
}

TEST(SampleCommand, BadSettingsNameTheKey) {
  const std::string args = "sample --config " + config_file("sample.yaml", kSample) + " trainer.run_dir=" +
                           (kWork / "bad").string();
  testing::CommandResult r = grpo(args + " sample.required_components=[math.corect]");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "sample.required_components: no reward component 'math.corect'")) << r.output;
  r = grpo(args + " sample.dataset=/nonexistent.jsonl");
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_TRUE(contains(r.output, "sample.dataset: ")) << r.output;
  EXPECT_FALSE(fs::exists(kWork / "bad" / "COMPLETE"));
  // Runs that failed before writing a part leave nothing that could mix with the next one.
  r = grpo(args);
  EXPECT_EQ(r.exit_code, 0) << r.output;
}

}  // namespace
}  // namespace grpo
