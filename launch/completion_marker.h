#pragma once
// The `COMPLETE` file a verb writes into its run directory after it succeeded: the contract
// between the verbs and `grpo pipeline` (a stage is complete when its directory holds one).

#include <map>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "core/status.h"

namespace grpo {

inline constexpr const char* kCompletionMarkerName = "COMPLETE";

struct CompletionRecord {
  std::string verb;                            // sft, train, eval, sample, convert
  std::string finished;                        // UTC, ISO 8601
  double seconds = 0;                          // the verb's own wall-clock time
  std::map<std::string, std::string> outputs;  // name -> path (final, run_dir, output, ...)
  nlohmann::json metrics = nlohmann::json::object();  // what the summary table shows
};

// Writes <dir>/COMPLETE atomically (`finished` is filled in when empty).
Status write_completion_marker(const std::string& dir, CompletionRecord record);

// The record in <dir>/COMPLETE; nullopt when there is none; an error when it cannot be read.
StatusOr<std::optional<CompletionRecord>> read_completion_marker(const std::string& dir);

// Removes <dir>/COMPLETE so a run that starts again is not taken as finished if it stops early.
Status remove_completion_marker(const std::string& dir);

}  // namespace grpo
