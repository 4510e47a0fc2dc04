#pragma once
// A model and tokenizer loaded as the trainer loads them (trainer/policy.h), for tests that only
// need one to exist: a load error fails the calling test with its message.

#include <gtest/gtest.h>

#include <cstdint>
#include <string>
#include <utility>

#include "trainer/policy.h"

namespace grpo::testing {

inline Policy load_test_policy(const std::string& path, uint64_t seed = 1) {
  ModelConfig config;
  config.path = path;
  StatusOr<Policy> policy = load_policy(config, seed);
  EXPECT_TRUE(policy) << policy.status().message();
  return std::move(policy).value();
}

}  // namespace grpo::testing
