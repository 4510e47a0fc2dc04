// completion_logprobs (chunked head, block-wise attention) against the plain path through the same
// demo decoder: full logits, log_softmax, gather; values, entropy and parameter gradients.

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/autograd.h>

#include "trainer/policy.h"

namespace grpo {
namespace {

double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

TEST(CompletionLogprobs, EqualsFullLogitsPathWithGradients) {
  ModelConfig config;
  config.path = "builtin:demo-qwen2";
  StatusOr<Policy> policy = load_policy(config, /*seed=*/3);
  ASSERT_TRUE(policy.is_ok()) << policy.status().message();
  Decoder& model = policy->model;
  const PaddedBatch b = pad_batch({{5, 6, 7}, {8}, {9, 10, 11, 12, 13}}, {{20, 21, 22, 23}, {30}, {40, 41}}, 0);
  const double temperature = 0.8;
  const at::Tensor& head = model->head_weight();  // tied: the embeddings
  const at::Tensor q_proj = model->named_parameters()["model.layers.1.self_attn.q_proj.weight"];

  at::Tensor entropy;
  const at::Tensor logp = completion_logprobs(model, b.prompt_ids, b.prompt_mask, b.completion_ids, b.completion_mask,
                                              temperature, &entropy);
  (logp * at::arange(1, 5).to(at::kFloat)).sum().backward();
  const at::Tensor grad_head = head.grad().clone(), grad_q = q_proj.grad().clone();
  model->zero_grad();

  const int64_t p = b.prompt_ids.size(1), c = b.completion_ids.size(1);
  const at::Tensor ids = at::cat({b.prompt_ids, b.completion_ids}, 1), mask = at::cat({b.prompt_mask, b.completion_mask}, 1);
  const at::Tensor logits = model->logits_from_hidden(model->hidden(ids, mask).narrow(1, p - 1, c)) / temperature;
  const at::Tensor logp_all = at::log_softmax(logits, -1);
  const at::Tensor keep = b.completion_mask.to(at::kFloat);
  const at::Tensor want = logp_all.gather(2, b.completion_ids.unsqueeze(2)).squeeze(2) * keep;
  const at::Tensor want_entropy = -(logp_all.exp() * logp_all).sum(-1) * keep;
  (want * at::arange(1, 5).to(at::kFloat)).sum().backward();

  EXPECT_LE(max_abs_diff(logp, want), 1e-5);
  EXPECT_LE(max_abs_diff(entropy, want_entropy), 1e-5);
  EXPECT_LE(max_abs_diff(grad_head, head.grad()), 1e-5);
  EXPECT_LE(max_abs_diff(grad_q, q_proj.grad()), 1e-5);
  EXPECT_GT(head.grad().abs().max().item<double>(), 0.0);
  EXPECT_EQ(logp[1][1].item<float>(), 0.0f) << "padding";
  EXPECT_LT(logp[0][3].item<float>(), 0.0f);
}

}  // namespace
}  // namespace grpo
