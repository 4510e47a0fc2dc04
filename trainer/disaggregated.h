#pragma once
// The disaggregated layout (trainer.rollout_ranks = K > 0): the last K ranks only generate and
// score, the others only train. What crosses between the roles each step: a control word and the
// new weights (trainers -> rollout ranks, after each optimizer step), and the scored batch (rollout
// ranks -> trainers). docs/training.md describes the schedule and rollout.max_staleness.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "dist/communicator.h"
#include "rewards/reward_set.h"
#include "rollout/engine.h"

namespace grpo {

struct TrainingRun;
class ShardedDecoder;

// One GRPO step's sampled and scored rows: the roles' contract (DESIGN.md "The roles' contract").
// Rows are whole groups (G consecutive rows per prompt).
struct ScoredBatch {
  RolloutBatch batch;                 // N rows; policy_version names the weights that sampled them
  std::vector<RewardSample> samples;  // [N]: prompt, decoded completion, dataset fields
  std::vector<SampleScores> scores;   // [N]
  int64_t generated_groups = 0;       // groups sampled for the step over every rank (refill rounds too)
  int64_t kept_groups = 0;            // groups trained on over every rank (with dynamic sampling, a short
                                      // step's flat fill too)
  int64_t reward_errors = 0;          // failed reward evaluations counted in this part of the step
  double rollout_seconds = 0, reward_seconds = 0;
  nlohmann::json data_cursor;  // DataOrder::cursor() right after the step's prompts were drawn
};

// Which role this rank plays and the communicators between the roles.
struct RolloutLayout {
  bool rollout = false;     // this rank generates and scores; else it trains
  int trainer_ranks = 0;    // world ranks 0 .. trainer_ranks - 1
  int rollout_ranks = 0;    // world ranks trainer_ranks .. size - 1
  // The ranks of this rank's role, on the device communicator: gradients among trainers, the
  // dynamic-sampling votes among rollout ranks.
  std::unique_ptr<Communicator> role;
  // Trainer rank 0 and every rollout rank, on the device communicator: the weights' broadcast
  // (stages 0-2). Null on the other trainer ranks.
  std::unique_ptr<Communicator> weights;
  // Every trainer rank and the first rollout rank (its last rank), on the device communicator: the
  // ZeRO-3 shards' gather. Null on the other rollout ranks.
  std::unique_ptr<Communicator> shard_owners;
};

// Splits `device_comm` (every rank together). Throws naming trainer.rollout_ranks unless
// 0 < rollout_ranks < size.
RolloutLayout split_layout(Communicator& device_comm, int64_t rollout_ranks);

// Bytes on the wire, and back: exact (doubles bit for bit, tensors raw).
std::string encode_scored_batch(const ScoredBatch& batch);
ScoredBatch decode_scored_batch(const std::string& bytes);

// Every rank of `host` (the host world) together: each rollout rank's `local` reaches every rank;
// returns the rollout ranks' parts in rank order (trainers pass an empty `local`).
std::vector<ScoredBatch> gather_scored_batches(Communicator& host, const RolloutLayout& layout,
                                               const std::string& local);

// The parts' groups concatenated in order and cut evenly: trainer `rank` of `ranks` gets groups
// [kept * rank / ranks, kept * (rank + 1) / ranks). Failed reward evaluations count on trainer 0;
// the timings are the slowest part's.
ScoredBatch trainer_share(const std::vector<ScoredBatch>& parts, int rank, int ranks, int64_t pad_id);

// The word trainer rank 0 sends every rollout rank (over the host world) before each batch:
// whether to produce it, and the trainers' step. Every rank of `host` together.
struct RolloutControl {
  bool proceed = true;
  int64_t step = 0;
};
RolloutControl broadcast_control(Communicator& host, const RolloutControl& control);

// One weight sync, as logged per step.
struct WeightSyncStats {
  double seconds = 0;       // on this rank: transfer and checksum comparison
  double wait_seconds = 0;  // trainers: waiting for the rollout ranks to be ready (not in `seconds`)
  int64_t bytes = 0;        // payload each rollout rank receives (at stage 3 with the shards' padding)
  int64_t sent_bytes = 0;   // payload this rank puts on the wire: the whole model from trainer 0
                            // (stages 0-2), its own shards from each trainer rank (stage 3)
};

// Where the weights come from, which says how they travel.
enum class WeightSource {
  kTrainerRankZero,  // stages 0-2: trainer 0 holds them whole and broadcasts them
  kShardOwners,      // stage 3: each trainer rank sends its shards, unit by unit
};

// Stages 0-2. Trainers: every trainer rank calls it; trainer 0 broadcasts the whole weights to the
// rollout ranks. `whole` is the model's parameters in named_parameters() order on trainer 0 (empty
// elsewhere); they travel as `dtype`, the rollout model's parameter dtype. Then every rank of
// `host` compares per-unit checksums (rollout/engine.h unit_checksums) of trainer 0's weights with
// every rollout rank's and throws, naming the rank and unit, on any difference.
WeightSyncStats send_weights(Communicator& host, const RolloutLayout& layout, Decoder& model,
                             const std::vector<at::Tensor>& whole, at::ScalarType dtype);
// Stage 3, from the shard owners: every trainer rank calls it. For each unit in turn, each trainer
// rank casts its shard to `dtype` and sends it to the first rollout rank (layout.shard_owners'
// gather), which passes the assembled unit on to the other rollout ranks (their broadcast). No
// trainer rank holds more than its own shard of one unit in flight, and each sends 1/N of the
// model. Then every rank of `host` compares, per unit and per shard, each trainer rank's checksum
// of its shard with every rollout rank's of the same elements and throws, naming the rollout rank,
// the unit and the trainer rank, on any difference.
WeightSyncStats send_weight_shards(Communicator& host, const RolloutLayout& layout, ShardedDecoder& model,
                                   at::ScalarType dtype);
// Rollout ranks, the other end of either: loads the weights into `engine` as `version`.
WeightSyncStats receive_weights(Communicator& host, const RolloutLayout& layout, RolloutEngine& engine, int64_t version,
                                WeightSource source);

// The GRPO loop's ends of the exchange (trainer/grpo_trainer.cpp), over `host` = world():
// send_policy: every trainer rank, after each optimizer step: the policy, as version run.step
// (from the shard owners at stage 3).
WeightSyncStats send_policy(TrainingRun& run, Communicator& host);
// How this run's trainers send the weights (a rollout rank's side of send_policy).
WeightSource weight_source(const TrainingRun& run);
// receive_batch: every trainer rank, at the start of a step: tells the rollout ranks to go on and
// returns this trainer's share of the step's batch.
ScoredBatch receive_batch(TrainingRun& run, Communicator& host);
// A rollout rank's whole run: receives the starting weights, then produces batch after batch with
// `sample_step(step)` (which draws the step's prompts from the data order), rollout.max_staleness
// batches ahead of the trainers, loading each new policy in between, until the trainers say stop.
void run_rollout_role(TrainingRun& run, RolloutEngine& engine, const std::function<ScoredBatch(int64_t)>& sample_step);

}  // namespace grpo
