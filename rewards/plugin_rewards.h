#pragma once
// Rewards provided from outside grpo-cpp: a shared library speaking rewards/plugin_abi.h
// (`plugin`, run in a worker process of its own so that a hang, crash or exit is contained), or
// any program reading JSON lines on stdin and writing scores on stdout (`subprocess`, protocol 2:
// replies echo the request's request_id). docs/rewards.md shows both with the examples in
// examples/.

#include "rewards/reward.h"

namespace grpo {

StatusOr<std::unique_ptr<Reward>> create_plugin_reward(const nlohmann::json& options);
StatusOr<std::unique_ptr<Reward>> create_subprocess_reward(const nlohmann::json& options);

}  // namespace grpo
