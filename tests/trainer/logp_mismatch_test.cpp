// Sampler/trainer mismatch by construction: the rollout engine's sampling log-probs (KV-cache
// decode, left-padded prompts, temperature) equal the trainer's full-forward log-probs at the same
// weights to fp32 rounding, and logp_mismatch measures the gap the GRPO step logs and guards.

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <vector>

#include "rollout/engine.h"
#include "trainer/grpo_loss.h"
#include "trainer/policy.h"

namespace grpo {
namespace {

// The demo Qwen2 with weights 3x its N(0, 0.02) initialization, so that its next-token
// distributions are far from uniform (a near-uniform model would hide a wrong temperature or
// position). Much larger weights blow up the activations and with them fp32 rounding (x15: 7e-5).
Policy peaked_demo_policy() {
  ModelConfig config;
  config.path = "builtin:demo-qwen2";
  StatusOr<Policy> policy = load_policy(config, 11);
  EXPECT_TRUE(policy.is_ok()) << policy.status().message();
  at::NoGradGuard no_grad;
  for (auto& item : policy->model->named_parameters())
    if (item.key().find("norm") == std::string::npos) item.value().mul_(3.0);
  return *policy;
}

struct Rollout {
  RolloutBatch batch;
  at::Tensor trainer_logp;  // completion_logprobs at the sampling temperature
};

Rollout sample_and_score(Policy& policy, double temperature, double trainer_temperature) {
  // Prompts of 2, 11 and 6 tokens: every row is left-padded by a different amount.
  const std::vector<std::vector<int64_t>> prompts = {{72, 105}, {49, 50, 43, 51, 52, 61, 256, 49, 43, 50, 61}, {55, 43, 56, 61, 257, 55}};
  GenerationOptions options;
  options.sampling.temperature = temperature;
  options.sampling.top_p = 0.9;  // filters change the draw, not the log-prob the trainer compares with
  options.max_new_tokens = 24;
  options.group_size = 3;
  // The digits end a completion too, so rows finish at different lengths and the engine drops
  // finished rows from its cache mid-batch.
  options.stop_token_ids = policy.stop_token_ids;
  for (int64_t digit = '0'; digit <= '9'; ++digit) options.stop_token_ids.push_back(digit);
  options.pad_id = policy.pad_id;
  Rollout r;
  r.batch = generate(policy.model, prompts, options, rollout_seeds(5, {0, 1, 2}, 3));
  at::NoGradGuard no_grad;
  r.trainer_logp = completion_logprobs(policy.model, r.batch.prompt_ids, r.batch.prompt_mask, r.batch.completion_ids,
                                       r.batch.completion_mask, trainer_temperature);
  return r;
}

TEST(SamplerTrainerMismatch, KvCacheDecodeEqualsFullForwardInFp32) {
  Policy policy = peaked_demo_policy();
  const Rollout r = sample_and_score(policy, 0.7, 0.7);
  ASSERT_EQ(r.batch.sampling_logp.scalar_type(), at::kFloat);
  ASSERT_EQ(r.trainer_logp.scalar_type(), at::kFloat);
  const LogpMismatch m = logp_mismatch(r.trainer_logp, r.batch.sampling_logp, r.batch.completion_mask);
  const double tokens = m.tokens.item<double>();
  ASSERT_GT(tokens, 60);
  EXPECT_LE(m.abs_diff_max.item<double>(), 1e-5);
  EXPECT_LE(m.abs_diff_sum.item<double>() / tokens, 2e-6);
  EXPECT_LE(std::abs(m.kl_sum.item<double>() / tokens), 1e-10);

  // The comparison has teeth: the tokens are far from uniform, and the trainer at another
  // temperature (a classic sampler/trainer bug) is caught by a wide margin.
  const at::Tensor valid = r.batch.completion_mask;
  EXPECT_GT(r.batch.sampling_logp.masked_select(valid).std().item<double>(), 0.3);
  const Rollout wrong = sample_and_score(policy, 0.7, 1.0);
  const LogpMismatch w = logp_mismatch(wrong.trainer_logp, wrong.batch.sampling_logp, wrong.batch.completion_mask);
  EXPECT_GT(w.abs_diff_sum.item<double>() / w.tokens.item<double>(), 1e-2);
  EXPECT_GT(w.kl_sum.item<double>(), 0.0);
}

TEST(SamplerTrainerMismatch, LogpMismatchIgnoresPaddingAndSumsExactly) {
  const at::Tensor trainer = at::tensor({-1.0, -2.0, 50.0, -0.5, -0.25, -3.0}, at::kDouble).view({2, 3});
  const at::Tensor sampler = at::tensor({-1.5, -2.0, -9.0, -0.25, -0.25, 7.0}, at::kDouble).view({2, 3});
  const at::Tensor mask = at::tensor({1, 1, 0, 1, 1, 0}, at::kLong).view({2, 3});
  const LogpMismatch m = logp_mismatch(trainer, sampler, mask);
  EXPECT_EQ(m.tokens.item<int64_t>(), 4);
  EXPECT_DOUBLE_EQ(m.abs_diff_sum.item<double>(), 0.75);
  EXPECT_DOUBLE_EQ(m.abs_diff_max.item<double>(), 0.5);
  // q = 0.5, 0, -0.25, 0
  EXPECT_NEAR(m.kl_sum.item<double>(), (std::exp(0.5) - 1.5) + (std::exp(-0.25) - 0.75), 1e-15);
}

}  // namespace
}  // namespace grpo
