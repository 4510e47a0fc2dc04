#pragma once
// Checkpoints: step-N/ holds the model (a Hugging Face directory: config.json, model.safetensors,
// tokenizer.json), optimizer.safetensors, state.json (step, data cursor, scheduler), and
// manifest.json with each file's size and CRC-32C. At ZeRO stage 3 the model and optimizer files
// are replaced by one shard file per rank, and the manifest records the shard layout. Everything is written into a temporary
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
#include "trainer/shard_layout.h"

namespace grpo {

struct Config;
class Communicator;

struct CheckpointContents {
  int64_t step = 0;
  TensorMap model;                             // HF parameter names
  TensorMap optimizer;                         // e.g. exp_avg.<name>, exp_avg_sq.<name>
  nlohmann::json state = nlohmann::json::object();
  std::map<std::string, std::string> files;    // extra files by name: config.json, tokenizer.json, ...
  // A sharded (stage 3) checkpoint: `model` and `optimizer` are empty; `layout` says how the saved
  // ranks cut the units, and shards[r] is saved rank r's shard-<r>-of-<ranks>.safetensors (zero-copy
  // views): master.<unit>, exp_avg.<unit>, exp_avg_sq.<unit> (shard_layout.h: read_flat_range).
  std::optional<ShardLayout> layout;
  std::vector<TensorMap> shards;
};

// Writes `checkpoints_dir`/step-<step>/, then removes all but the newest `keep_last` checkpoints
// numbered up to <step>. The one just written is always kept, and checkpoints numbered after it
// are never touched (a run sets those aside when it starts: set_aside_checkpoints_after).
Status save_checkpoint(const std::string& checkpoints_dir, const CheckpointContents& contents, int64_t keep_last);

// Stage 3, every rank together: rank 0 writes the small files of `contents` (step, state, files;
// its model and optimizer are not used), every rank writes `shard` (its fp32 master shards and AdamW
// moments, named as CheckpointContents::shards says) as shard-<rank>-of-<ranks>.safetensors, and rank
// 0 writes the manifest last, with every file's size and CRC-32C and `layout`, then commits and
// prunes as save_checkpoint does. No rank holds more than its own shards. Returns the same outcome
// on every rank.
Status save_sharded_checkpoint(const std::string& checkpoints_dir, const CheckpointContents& contents,
                               const ShardLayout& layout, const TensorMap& shard, Communicator& comm, int64_t keep_last);

// The steps of the step-<N> directories under `checkpoints_dir`, complete or not, ascending.
std::vector<int64_t> checkpoint_steps(const std::string& checkpoints_dir);

// Renames every step-<N> with N > `step` to step-<N>.set-aside-<unix time>, so that a run which
// starts at `step` neither loads nor removes another timeline's checkpoints. Returns "old -> new"
// for each, or the error of the first rename that failed.
StatusOr<std::vector<std::string>> set_aside_checkpoints_after(const std::string& checkpoints_dir, int64_t step);

// The settings that make a resumed run a different experiment (model.path, data.train_path,
// grpo.group_size, optimizer.lr, ...) that differ between the configuration a checkpoint was
// written with and `now`, one "key: old -> new" each.
std::vector<std::string> changed_essentials(const Config& before, const Config& now);

// Reads one checkpoint directory, verifying every file against the manifest.
StatusOr<CheckpointContents> load_checkpoint(const std::string& path);

// The newest checkpoint under `checkpoints_dir` that verifies; incomplete or corrupt ones are
// listed in `skipped` (path: why). nullopt when there is none.
std::optional<CheckpointContents> load_latest_checkpoint(const std::string& checkpoints_dir,
                                                         std::vector<std::string>* skipped, std::string* path = nullptr);

}  // namespace grpo
