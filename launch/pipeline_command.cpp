// `grpo pipeline`: runs the stages of a pipeline file as subprocesses of this binary, skipping
// complete stages, resuming the interrupted one, and ending with one summary table.

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <set>

#include <fmt/format.h>

#include "core/atomic_file.h"
#include "core/run_lock.h"
#include "launch/cli.h"
#include "launch/commands.h"
#include "launch/completion_marker.h"
#include "launch/pipeline.h"

extern char** environ;

namespace grpo {

const char* const kPipelineUsage =
    "grpo pipeline --config FILE [--dry-run] [key=value ...]\n\n"
    "Runs the stages of FILE (sft, train, eval, sample, convert), each as `grpo <verb> --config\n"
    "<stage config> key=value...` (under the launcher with -np N for N > 1 ranks), in order; a stage\n"
    "takes earlier stages' outputs as ${stage.output}. A stage whose directory <run_dir>/<stage> holds\n"
    "COMPLETE is skipped; an interrupted one resumes (--resume auto); a stage whose inputs were just\n"
    "rerun starts afresh. Ends with one table, also in <run_dir>/summary.json. The whole file is\n"
    "checked before anything runs. --dry-run prints the checked plan and runs nothing. Overrides set\n"
    "the file's top-level keys (run_dir, ranks). A failing stage stops the pipeline with its exit code.";

namespace {

namespace fs = std::filesystem;

struct StageResult {
  std::string name;
  std::string verb;
  std::string status = "pending";  // ran, resumed, skipped, failed, pending
  double seconds = 0;
  int exit_code = 0;
  CompletionRecord record;
};

std::string shell_quote(const std::string& word) {
  if (!word.empty() && word.find_first_not_of("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./=:,@+") ==
                           std::string::npos)
    return word;
  std::string quoted = "'";
  for (char c : word) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

std::string command_line(const std::vector<std::string>& argv) {
  std::string line;
  for (const std::string& word : argv) line += (line.empty() ? "" : " ") + shell_quote(word);
  return line;
}

// Runs argv with this process's stdin/stdout/stderr; returns its exit code (128 + signal if killed).
int run_subprocess(const std::vector<std::string>& argv) {
  std::vector<char*> raw;
  for (const std::string& word : argv) raw.push_back(const_cast<char*>(word.c_str()));
  raw.push_back(nullptr);
  std::fflush(stdout);
  std::fflush(stderr);
  pid_t pid = 0;
  if (const int error = ::posix_spawnp(&pid, raw[0], nullptr, nullptr, raw.data(), environ); error != 0)
    throw std::runtime_error(fmt::format("cannot start '{}': {}", argv[0], std::strerror(error)));
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) throw std::runtime_error(fmt::format("waiting for '{}': {}", argv[0], std::strerror(errno)));
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 1;
}

std::string format_metric(const nlohmann::json& value) {
  if (value.is_number_integer()) return std::to_string(value.get<int64_t>());
  if (value.is_number()) return fmt::format("{:.3f}", value.get<double>());
  return value.is_string() ? value.get<std::string>() : value.dump();
}

bool headline_metric(const std::string& verb, const std::string& key) {
  if (verb == "eval") return key.find("pass@") != std::string::npos || key.find("cons@") != std::string::npos;
  if (verb == "sft") return key == "loss" || key == "last_step";
  if (verb == "train") return key == "reward" || key == "accuracy" || key == "last_step";
  if (verb == "sample") return key == "kept" || key == "generated" || key == "prompts";
  return false;
}

// The few metrics a row shows; every metric is in summary.json.
std::string headline(const StageResult& r) {
  std::vector<std::string> parts;
  for (const auto& [key, value] : r.record.metrics.items())
    if (headline_metric(r.verb, key) && !value.is_structured()) parts.push_back(key + " " + format_metric(value));
  if (parts.empty())  // a verb this table does not know: its first few scalar metrics
    for (const auto& [key, value] : r.record.metrics.items())
      if (!value.is_structured() && parts.size() < 4) parts.push_back(key + " " + format_metric(value));
  return fmt::format("{}", fmt::join(parts, ", "));
}

void print_summary(const std::vector<StageResult>& results, double seconds) {
  size_t width = 5;
  for (const StageResult& r : results) width = std::max(width, r.name.size());
  fmt::print("\n{:<{}}  {:<7}  {:<8}  {:>8}  {}\n", "stage", width, "verb", "status", "time", "metrics");
  for (const StageResult& r : results) {
    const std::string time = r.status == "skipped" || r.status == "pending" ? "-" : fmt::format("{:.1f} s", r.seconds);
    const std::string status = r.status == "failed" ? fmt::format("failed ({})", r.exit_code) : r.status;
    fmt::print("{:<{}}  {:<7}  {:<8}  {:>8}  {}\n", r.name, width, r.verb, status, time, headline(r));
  }
  fmt::print("pipeline: {:.1f} s\n", seconds);
}

Status write_summary(const Pipeline& pipeline, const std::vector<StageResult>& results, double seconds) {
  nlohmann::json stages = nlohmann::json::array();
  for (const StageResult& r : results)
    stages.push_back({{"name", r.name},
                      {"verb", r.verb},
                      {"status", r.status},
                      {"seconds", r.seconds},                // this invocation's wall-clock time
                      {"verb_seconds", r.record.seconds},    // the verb's own time, also of a skipped stage
                      {"exit_code", r.exit_code},
                      {"finished", r.record.finished},
                      {"outputs", r.record.outputs},
                      {"metrics", r.record.metrics}});
  const nlohmann::json summary = {{"pipeline", pipeline.source}, {"seconds", seconds}, {"stages", stages}};
  return write_file_atomic(pipeline.config.run_dir + "/summary.json", summary.dump(2) + "\n");
}

std::string this_binary() {
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  if (ec) throw std::runtime_error(fmt::format("cannot find this program's path: {}", ec.message()));
  return self.string();
}

bool holds_files(const std::string& dir) {
  std::error_code ec;
  return fs::is_directory(dir, ec) && !fs::is_empty(dir, ec);
}

int print_plan(const Pipeline& pipeline, const std::string& binary) {
  StageOutputs outputs;
  for (const PlannedStage& stage : pipeline.order)
    for (const std::string& name : verb_outputs(stage.config.verb))
      outputs[stage.config.name][name] = fmt::format("${{{}.{}}}", stage.config.name, name);
  fmt::print("pipeline {}: {} stages, run directory {}\n", pipeline.source, pipeline.order.size(),
             pipeline.config.run_dir);
  for (size_t i = 0; i < pipeline.order.size(); ++i) {
    const PlannedStage& stage = pipeline.order[i];
    StatusOr<std::vector<std::string>> command = stage_command(pipeline, stage, outputs, binary);
    if (!command) throw UsageError(command.status().message());
    fmt::print("{}. {} ({}): {}\n", i + 1, stage.config.name, stage.config.verb, command_line(*command));
  }
  return kExitOk;
}

}  // namespace

int run_pipeline(const Arguments& args) {
  if (!args.config_path) throw UsageError("--config FILE is required");
  StatusOr<Pipeline> loaded = load_pipeline(*args.config_path, args.overrides);
  if (!loaded) throw UsageError(loaded.status().message());
  const Pipeline& pipeline = *loaded;
  const std::string binary = this_binary();
  if (args.has_flag("--dry-run")) return print_plan(pipeline, binary);

  std::error_code ec;
  fs::create_directories(pipeline.config.run_dir, ec);
  if (ec) throw std::runtime_error(fmt::format("run_dir: cannot create '{}': {}", pipeline.config.run_dir, ec.message()));
  StatusOr<std::unique_ptr<RunLock>> lock = RunLock::acquire(pipeline.config.run_dir);
  if (!lock) throw std::runtime_error(lock.status().message());

  std::vector<StageResult> results;
  for (const PlannedStage& stage : pipeline.order) {
    StageResult result;
    result.name = stage.config.name;
    result.verb = stage.config.verb;
    results.push_back(result);
  }
  const auto start = std::chrono::steady_clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
  StageOutputs outputs;
  std::set<std::string> rerun;  // stages that ran in this invocation: their dependents start afresh
  for (size_t i = 0; i < pipeline.order.size(); ++i) {
    const PlannedStage& stage = pipeline.order[i];
    StageResult& result = results[i];
    bool inputs_rerun = false;
    for (const std::string& input : stage.inputs) inputs_rerun = inputs_rerun || rerun.count(input) > 0;

    StatusOr<std::optional<CompletionRecord>> marker = read_completion_marker(stage.dir);
    if (!marker) throw std::runtime_error(fmt::format("stage '{}': {}", stage.config.name, marker.status().message()));
    if (marker->has_value() && (*marker)->verb == stage.config.verb && !inputs_rerun) {
      result.status = "skipped";
      result.record = **marker;
      outputs[stage.config.name] = result.record.outputs;
      fmt::print("== {}/{} {} ({}): complete, skipped ==\n", i + 1, pipeline.order.size(), stage.config.name,
                 stage.config.verb);
      continue;
    }
    if (inputs_rerun && holds_files(stage.dir)) {
      fmt::print("== {}: its inputs were rerun; removing its earlier directory {} ==\n", stage.config.name, stage.dir);
      fs::remove_all(stage.dir, ec);
      if (ec) throw std::runtime_error(fmt::format("cannot remove '{}': {}", stage.dir, ec.message()));
    }
    const bool resuming = holds_files(stage.dir);
    StatusOr<std::vector<std::string>> command = stage_command(pipeline, stage, outputs, binary);
    if (!command) throw std::runtime_error(command.status().message());
    fmt::print("== {}/{} {} ({}){} ==\n{}\n", i + 1, pipeline.order.size(), stage.config.name, stage.config.verb,
               resuming ? ", resuming" : "", command_line(*command));
    const auto stage_start = std::chrono::steady_clock::now();
    result.exit_code = run_subprocess(*command);
    result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - stage_start).count();
    rerun.insert(stage.config.name);
    marker = read_completion_marker(stage.dir);
    std::string failure;
    if (result.exit_code != 0)
      failure = fmt::format("failed with exit code {}", result.exit_code);
    else if (!marker)
      failure = fmt::format("exited 0 but its completion record is unreadable: {}", marker.status().message());
    else if (!marker->has_value())
      failure = fmt::format("exited 0 but wrote no {}/{}", stage.dir, kCompletionMarkerName);
    if (!failure.empty()) {
      if (result.exit_code == 0) result.exit_code = kExitFailure;
      result.status = "failed";
      print_summary(results, elapsed());
      (void)write_summary(pipeline, results, elapsed());
      fmt::print(stderr, "grpo pipeline: stage '{}' ({}) {}; rerun the same command to resume from it\n",
                 stage.config.name, stage.config.verb, failure);
      return result.exit_code;
    }
    result.status = resuming ? "resumed" : "ran";
    result.record = **marker;
    outputs[stage.config.name] = result.record.outputs;
  }
  print_summary(results, elapsed());
  if (Status s = write_summary(pipeline, results, elapsed()); !s.is_ok()) throw std::runtime_error(s.message());
  fmt::print("summary: {}/summary.json\n", pipeline.config.run_dir);
  return kExitOk;
}

}  // namespace grpo
