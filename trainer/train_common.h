#pragma once
// What the SFT and GRPO loops share: the run directory, the policy and its optimizer, resuming,
// gradient averaging over ranks, checkpoints and the progress line.

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/config.h"
#include "dist/communicator.h"
#include "trainer/data.h"
#include "trainer/dev_evaluation.h"
#include "trainer/disaggregated.h"
#include "trainer/distributed_optimizer.h"
#include "trainer/fsdp.h"
#include "trainer/metrics.h"
#include "trainer/policy.h"

namespace grpo {

class RewardSet;

struct TrainingRun {
  Config config;
  // The ranks this rank trains with (its role's ranks when trainer.rollout_ranks > 0).
  Communicator* comm = nullptr;
  // trainer.rollout_ranks > 0: this rank's role and the communicators between the roles (else null).
  // A rollout rank has no sharded model and no optimizer: its policy only generates.
  std::unique_ptr<RolloutLayout> layout;
  Policy policy;
  std::vector<std::string> param_names;
  std::vector<at::Tensor> params;
  // Stage 3 or activation checkpointing: the policy wrapped through its unit seam (else null).
  std::unique_ptr<ShardedDecoder> sharded;
  std::unique_ptr<DistributedAdamW> optimizer;  // sums gradients over ranks, clips, AdamW (trainer.zero_stage)
  std::unique_ptr<MetricsWriter> metrics;  // rank 0 only
  int64_t step = 0;                        // optimizer steps completed (a resumed run starts here)
  // eval.every_steps > 0 on a trainer: the set evaluated during training (else null).
  std::unique_ptr<DevEvaluation> dev;
  // Training ended before trainer.steps for good: the dev set reached eval.stop_at_pass_at_1 (this
  // run or the one resumed). A trainer.max_seconds stop is not final: a resumed run goes on.
  bool finished = false;
  nlohmann::json resumed_state;            // state.json of the checkpoint resumed from, or null
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
};

// Sets threads, creates the run directory (rank 0) with the resolved config.yaml, loads the policy
// and builds AdamW; then resumes per checkpoint.resume. `kind` (sft, grpo) is stored in checkpoints.
std::unique_ptr<TrainingRun> start_training_run(const Config& config, const std::string& kind);

// The training set (data.train_path) and its seeded order, continued from the checkpoint's cursor
// when the run resumed. Throws naming data.train_path when the set cannot be read or is empty.
// With `rewards` (GRPO) every example is first checked for the fields they need and for a prompt
// that leaves rollout.max_new_tokens of room in the model's context (data.overlong_prompts).
struct TrainingData {
  Dataset dataset;
  DataOrder order;
};
TrainingData load_training_data(const TrainingRun& run, const RewardSet* rewards = nullptr);

// Writes step-<run.step> (rank 0; every rank takes part in gathering sharded optimizer state) and
// waits for it on every rank.
void save_training_checkpoint(TrainingRun& run, const std::string& kind, const nlohmann::json& state);

// True on every rank when any rank says stop (the time limit is read on rank 0 only, so all agree).
bool should_stop(TrainingRun& run);

// Whether the loop runs another step: trainer.steps not reached and the run not finished early.
inline bool steps_remain(const TrainingRun& run) { return run.step < run.config.trainer.steps && !run.finished; }

// After a step: evaluates the dev set when eval.every_steps is due; logs `metrics` and the dev
// metrics (metrics.jsonl, TensorBoard, the progress line with `console_keys`); checkpoints when due
// (every_steps, the last step, or a stop), and says whether to stop now (trainer.max_seconds, or
// eval.stop_at_pass_at_1 reached, which also sets run.finished).
bool finish_step(TrainingRun& run, const std::string& kind, const nlohmann::json& state,
                 const std::map<std::string, double>& metrics, const std::vector<std::string>& console_keys,
                 double step_seconds);

// "step 12/300 | loss 0.41 | ... | 3.2 s/step | ETA 15m20s"
std::string progress_line(const TrainingRun& run, const std::map<std::string, double>& metrics,
                          const std::vector<std::string>& keys, double step_seconds);

// Before any model is loaded: each step's `trainer.prompts_per_step` items (SFT examples, GRPO
// prompts of `rows_per_item` samples) are cut over `ranks` ranks as [items * r / ranks,
// items * (r + 1) / ranks). Throws, naming the keys, when a rank would get none, or at stage 3 when
// the ranks' rows would split into different numbers of trainer.micro_batch_size passes.
// `role` names the ranks in the message ("ranks", "trainer ranks", "rollout ranks"); with
// `passes_matter` false (ranks that only generate) only the first rule applies.
void check_step_split(const TrainerConfig& trainer, int64_t rows_per_item, int64_t ranks, const std::string& role,
                      bool passes_matter = true);

// Stage 3 gathers every unit in every pass, so every rank must run the same number of passes:
// throws on every rank that sees a difference (a collective; a no-op below stage 3).
void check_same_pass_count(TrainingRun& run, int64_t passes);

// The options trainer.* gives ShardedDecoder for the policy (and, frozen, its reference).
ShardOptions shard_options(const TrainerConfig& trainer);

// Exports the trained policy as a Hugging Face directory <run_dir>/final (rank 0; at stage 3 every
// rank takes part in gathering it).
void export_final(TrainingRun& run);

}  // namespace grpo
