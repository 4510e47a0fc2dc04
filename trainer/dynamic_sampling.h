#pragma once
// DAPO's dynamic sampling with refill: a GRPO step samples rounds of prompts until enough groups
// carry signal (rewards not all equal), then trains on the first of them in global prompt order,
// so that the choice does not depend on how prompts are split over ranks.

#include <cstdint>
#include <utility>
#include <vector>

#include "rollout/engine.h"

namespace grpo {

// A group of one round: `prompt` is its position among the round's prompts (over all ranks).
struct GroupRef {
  int64_t round = 0;
  int64_t prompt = 0;
  bool operator==(const GroupRef& o) const { return round == o.round && prompt == o.prompt; }
};

// has_signal[round][prompt] over every round so far: the first `wanted` groups with signal,
// round by round and prompt by prompt.
std::vector<GroupRef> first_signal_groups(const std::vector<std::vector<bool>>& has_signal, int64_t wanted);

// `kept` (from first_signal_groups) completed to `wanted` groups with the first groups without
// signal, round by round, when the rounds ran out first (max_generation_rounds): every rank then
// still trains on its share of rows, and those groups carry no gradient (filter_zero_std_groups
// masks them). Without it a rank could be left with no rows at all.
std::vector<GroupRef> filled_with_flat_groups(std::vector<GroupRef> kept, const std::vector<std::vector<bool>>& has_signal,
                                              int64_t wanted);

// True for each group of G consecutive rewards whose values are not all equal.
std::vector<bool> groups_with_signal(const std::vector<float>& rewards, int64_t group_size);

// The rows (batch index, row) of several rollout batches as one batch, prompts re-padded on the
// left and completions on the right to the widest kept row.
RolloutBatch gather_rows(const std::vector<const RolloutBatch*>& batches,
                         const std::vector<std::pair<size_t, int64_t>>& rows, int64_t pad_id);

}  // namespace grpo
