#pragma once
// Checkpoints: step-N/ holds the model (a Hugging Face directory: config.json, model.safetensors,
// tokenizer.json), optimizer.safetensors, state.json (step, data cursor, scheduler), and
// manifest.json with each file's size and CRC-32C. Everything is written into a temporary
// directory, fsynced, and committed by one rename; the manifest is written last, so a checkpoint
// without a valid manifest is incomplete and never loaded.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/status.h"
#include "models/safetensors.h"

namespace grpo {

struct CheckpointContents {
  int64_t step = 0;
  TensorMap model;                             // HF parameter names
  TensorMap optimizer;                         // e.g. exp_avg.<name>, exp_avg_sq.<name>
  nlohmann::json state = nlohmann::json::object();
  std::map<std::string, std::string> files;    // extra files by name: config.json, tokenizer.json, ...
};

// Writes `checkpoints_dir`/step-<step>/ and keeps the newest `keep_last` complete checkpoints.
Status save_checkpoint(const std::string& checkpoints_dir, const CheckpointContents& contents, int64_t keep_last);

// Reads one checkpoint directory, verifying every file against the manifest.
StatusOr<CheckpointContents> load_checkpoint(const std::string& path);

// The newest checkpoint under `checkpoints_dir` that verifies; incomplete or corrupt ones are
// listed in `skipped` (path: why). nullopt when there is none.
std::optional<CheckpointContents> load_latest_checkpoint(const std::string& checkpoints_dir,
                                                         std::vector<std::string>* skipped, std::string* path = nullptr);

}  // namespace grpo
