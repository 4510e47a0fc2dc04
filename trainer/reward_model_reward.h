#pragma once
// `reward_model`: a Hugging Face *ForSequenceClassification directory as a reward. It lives in the
// trainer layer because it runs a model; rewards/ stays free of tensors and sees it only through
// the registry.

#include <string>
#include <vector>

#include "core/status.h"

namespace grpo {

enum class RewardNormalization { kNone, kZScore, kSigmoid };

StatusOr<RewardNormalization> parse_reward_normalization(const std::string& name);

// The scores of one scoring call after normalization: zscore subtracts the batch mean and divides
// by the batch's population standard deviation (all 0 when it is 0); sigmoid maps each to (0, 1).
std::vector<double> normalize_reward_scores(const std::vector<double>& raw, RewardNormalization normalization);

// Adds `reward_model` to the reward registry. Idempotent; the train, reward and eval commands call
// it at start-up.
void register_model_rewards();

}  // namespace grpo
