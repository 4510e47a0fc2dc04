// `grpo sample`: rejection sampling of a checkpoint into an SFT set (trainer/rejection_sampling.h).
// Runs on every rank of an mpirun job; a failure on any rank ends the whole job.

#include <chrono>
#include <filesystem>
#include <memory>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "core/atomic_file.h"
#include "core/logging.h"
#include "core/run_lock.h"
#include "dist/communicator.h"
#include "launch/cli.h"
#include "launch/commands.h"
#include "launch/completion_marker.h"
#include "trainer/policy.h"
#include "trainer/rejection_sampling.h"

namespace grpo {

const char* const kSampleUsage =
    "grpo sample --config FILE [--overwrite] [key.path=value ...]\n"
    "mpirun -np N grpo sample --config FILE\n\n"
    "Rejection sampling: sample.samples_per_prompt completions of every prompt of sample.dataset\n"
    "(or data.train_path) from model.path, scored by reward.functions and filtered by sample.*\n"
    "(reward threshold, required components, format, language, length, repetition, duplicates,\n"
    "a cap per prompt). Writes the kept samples as an SFT set (JSON lines: id, prompt, response,\n"
    "answer, provenance) to sample.output (default <trainer.run_dir>/samples.jsonl), the counts to\n"
    "<trainer.run_dir>/sample_stats.json, and <trainer.run_dir>/COMPLETE last.\n"
    "A killed run continues where it stopped when run again with the same settings (parts of\n"
    "sample.prompts_per_part prompts in <trainer.run_dir>/sample_parts/); other settings are refused\n"
    "unless --overwrite, which deletes the earlier parts and outputs first.";

namespace {

// The first line where two settings texts differ, for the refusal message.
std::string first_difference(const std::string& before, const std::string& now) {
  std::istringstream a(before), b(now);
  std::string la, lb;
  while (true) {
    const bool ha = static_cast<bool>(std::getline(a, la)), hb = static_cast<bool>(std::getline(b, lb));
    if (!ha && !hb) return "";
    if (!ha || !hb || la != lb) return fmt::format("'{}' then, '{}' now", ha ? la : "", hb ? lb : "");
  }
}

// Whether an earlier attempt wrote any part (an attempt that failed before its first part left
// nothing its settings could be mixed with).
bool holds_parts(const std::string& parts_dir) {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(parts_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("part-", 0) == 0 && entry.path().extension() == ".json") return true;
  }
  return false;
}

// Rank 0: the lock, then the parts of an earlier attempt: kept when they were sampled with these
// settings, else refused (exit 2) unless --overwrite. A run in progress is not complete.
int claim_sample_directory(const Config& config, bool overwrite, std::unique_ptr<RunLock>* lock) {
  if (StatusOr<std::string> placed = placement(config.model.device); !placed) {
    fmt::print(stderr, "grpo sample: {}\n", placed.status().message());
    return kExitFailure;
  }
  const std::string& dir = config.trainer.run_dir;
  StatusOr<std::unique_ptr<RunLock>> locked = RunLock::acquire(dir);
  if (!locked) {
    fmt::print(stderr, "grpo sample: {}\n", locked.status().message());
    return kExitFailure;
  }
  *lock = std::move(locked).value();
  const std::string parts = sample_parts_dir(config), settings_path = parts + "/settings.yaml";
  const std::string settings = sample_settings(config);
  if (overwrite) {
    for (const std::string& path : {parts, sample_output_path(config), sample_stats_path(config),
                                    dir + "/" + kCompletionMarkerName}) {
      std::error_code ec;
      std::filesystem::remove_all(path, ec);
      if (ec) {
        fmt::print(stderr, "grpo sample: --overwrite: cannot remove '{}': {}\n", path, ec.message());
        return kExitFailure;
      }
    }
  } else if (holds_parts(parts) && std::filesystem::exists(settings_path)) {
    StatusOr<std::string> before = read_file(settings_path);
    if (!before) {
      fmt::print(stderr, "grpo sample: {}\n", before.status().message());
      return kExitFailure;
    }
    if (*before != settings) {
      fmt::print(stderr,
                 "grpo sample: trainer.run_dir '{}' holds parts sampled with other settings ({}); choose another "
                 "trainer.run_dir, or pass --overwrite to discard them\n",
                 dir, first_difference(*before, settings));
      return kExitUsage;
    }
  }
  if (Status s = remove_completion_marker(dir); !s.is_ok()) {
    fmt::print(stderr, "grpo sample: {}\n", s.message());
    return kExitFailure;
  }
  std::filesystem::create_directories(parts);
  if (Status s = write_file_atomic(settings_path, settings); !s.is_ok()) {
    fmt::print(stderr, "grpo sample: {}\n", s.message());
    return kExitFailure;
  }
  if (Status s = write_file_atomic(dir + "/config.yaml", config_to_yaml(config)); !s.is_ok()) {
    fmt::print(stderr, "grpo sample: {}\n", s.message());
    return kExitFailure;
  }
  return kExitOk;
}

// The pipeline's contract: a stage is complete when its run directory holds COMPLETE, written last.
void write_complete_marker(const Config& config, const SampleSummary& summary) {
  CompletionRecord record;
  record.verb = "sample";
  record.seconds = summary.seconds;
  record.outputs = {{"samples", sample_output_path(config)}, {"stats", sample_stats_path(config)}};
  record.metrics = {{"generated", summary.stats.generated}, {"kept", summary.stats.kept}};
  if (Status s = write_completion_marker(config.trainer.run_dir, record); !s.is_ok())
    throw std::runtime_error(s.message());
}

}  // namespace

int run_sample(const Arguments& args, const Config& config) {
  set_collective_timeout(config.trainer.collective_timeout_s);
  Communicator& comm = world();
  std::unique_ptr<RunLock> lock;  // held until the run has ended, however it ends
  int code = kExitOk;
  if (comm.rank() == 0) {
    try {
      code = claim_sample_directory(config, args.has_flag("--overwrite"), &lock);
    } catch (const std::exception& e) {
      fmt::print(stderr, "grpo sample: {}\n", e.what());
      code = kExitFailure;
    }
  }
  std::vector<double> agreed{static_cast<double>(code)};
  comm.all_reduce_sum(agreed);
  if (agreed[0] != 0) {
    shutdown_world();
    return static_cast<int>(agreed[0]);
  }
  try {
    const SampleSummary summary = run_rejection_sampling(config);
    if (comm.rank() == 0) {
      write_complete_marker(config, summary);
      fmt::print("{}\n", summary.stats.table());
      fmt::print("sample finished: {} parts ({} from an earlier attempt) in {:.1f} s; {} samples in {}, counts in {}\n",
                 summary.parts, summary.parts_resumed, summary.seconds, summary.stats.kept, sample_output_path(config),
                 sample_stats_path(config));
    }
  } catch (const std::exception& e) {
    // One failing rank must not leave the others waiting in a collective: end the whole job.
    log_error("grpo sample failed: {}", e.what());
    if (comm.size() > 1) comm.abort(1);
    shutdown_world();
    return kExitFailure;
  }
  shutdown_world();
  return kExitOk;
}

}  // namespace grpo
