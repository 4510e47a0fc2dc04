// The chunked token log-prob / entropy kernel against the plain path it replaces: full float32
// logits, log_softmax, gather, -sum p log p, written out here as the second opinion.

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>
#include <torch/autograd.h>

#include "kernels/token_logprobs.h"

namespace grpo {
namespace {

double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

struct Plain {
  at::Tensor logprobs, entropy;
};

Plain plain_path(const at::Tensor& hidden, const at::Tensor& weight, const at::Tensor& targets, const at::Tensor& mask,
                 double temperature) {
  const at::Tensor logits = at::linear(hidden, weight).to(at::kFloat) / temperature;
  const at::Tensor logp_all = at::log_softmax(logits, -1);
  const at::Tensor keep = mask.to(at::kFloat);
  return {logp_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1) * keep, -(logp_all.exp() * logp_all).sum(-1) * keep};
}

struct Case {
  bool tied;
  double temperature;
  int64_t chunk_tokens;
  at::ScalarType dtype;
};

struct Result {
  at::Tensor logprobs, entropy, grad_weight, grad_projection;
};

// A tiny "model": the head weight W [V, H] is also the embedding table when tied, so its
// gradient gathers from both uses, as in a tied decoder. hidden [N, C, H] = tanh(embed . P).
Result run_case(const Case& c, bool chunked) {
  const int64_t n = 3, len = 7, h = 16, vocab = 37;
  at::manual_seed(7);
  const auto f32 = at::TensorOptions().dtype(at::kFloat);
  at::Tensor weight = (at::randn({vocab, h}, f32) * 0.5).to(c.dtype).requires_grad_(true);
  at::Tensor embed = c.tied ? weight : (at::randn({vocab, h}, f32) * 0.5).to(c.dtype);
  at::Tensor projection = at::randn({h, h}, f32).div(4).to(c.dtype).requires_grad_(true);
  const at::Tensor ids = at::randint(vocab, {n, len}, at::kLong);
  const at::Tensor targets = at::randint(vocab, {n, len}, at::kLong);
  // Right padding of different lengths, one row fully real.
  const at::Tensor mask = at::arange(len).unsqueeze(0) < at::tensor({7, 4, 1}).unsqueeze(1);
  const at::Tensor grad_logp = at::randn({n, len}, f32), grad_entropy = at::randn({n, len}, f32);

  const at::Tensor hidden = at::tanh(at::matmul(embed.index_select(0, ids.view(-1)).view({n, len, h}), projection));
  Result r;
  if (chunked) {
    TokenLogprobsOptions options;
    options.temperature = c.temperature;
    options.chunk_tokens = c.chunk_tokens;
    const TokenLogprobs out = token_logprobs(hidden, weight, targets, mask, options);
    r.logprobs = out.logprobs;
    r.entropy = out.entropy;
  } else {
    const Plain out = plain_path(hidden, weight, targets, mask, c.temperature);
    r.logprobs = out.logprobs;
    r.entropy = out.entropy;
  }
  ((r.logprobs * grad_logp).sum() + (r.entropy * grad_entropy).sum()).backward();
  r.grad_weight = weight.grad();
  r.grad_projection = projection.grad();
  return r;
}

class TokenLogprobsCases : public ::testing::TestWithParam<Case> {};

TEST_P(TokenLogprobsCases, ValuesAndGradientsEqualThePlainPath) {
  const Case c = GetParam();
  const Result got = run_case(c, /*chunked=*/true), want = run_case(c, /*chunked=*/false);
  const bool bf16 = c.dtype == at::kBFloat16;
  const double value_tol = bf16 ? 1e-2 : 1e-5;
  EXPECT_EQ(got.logprobs.scalar_type(), at::kFloat);
  EXPECT_LE(max_abs_diff(got.logprobs, want.logprobs), value_tol);
  EXPECT_LE(max_abs_diff(got.entropy, want.entropy), value_tol);
  // Gradients are sums over tokens: compare relative to their scale.
  const double grad_tol = bf16 ? 2e-2 : 1e-5;
  const double w_scale = std::max(1.0, want.grad_weight.abs().max().item<double>());
  const double p_scale = std::max(1.0, want.grad_projection.abs().max().item<double>());
  EXPECT_LE(max_abs_diff(got.grad_weight, want.grad_weight) / w_scale, grad_tol);
  EXPECT_LE(max_abs_diff(got.grad_projection, want.grad_projection) / p_scale, grad_tol);
  // Padding: exactly zero, and the plain path agrees the tokens exist elsewhere.
  EXPECT_EQ(got.logprobs[1][5].item<float>(), 0.0f);
  EXPECT_EQ(got.entropy[2][3].item<float>(), 0.0f);
  EXPECT_LT(got.logprobs[0][5].item<float>(), 0.0f);
}

INSTANTIATE_TEST_SUITE_P(
    TiedUntiedTemperatureChunks, TokenLogprobsCases,
    ::testing::Values(Case{true, 1.0, 4, at::kFloat}, Case{false, 1.0, 4, at::kFloat}, Case{true, 0.7, 5, at::kFloat},
                      Case{false, 1.3, 1, at::kFloat}, Case{true, 0.7, 0, at::kFloat},
                      Case{false, 0.7, 1000, at::kFloat}, Case{true, 0.7, 4, at::kBFloat16},
                      Case{false, 1.0, 5, at::kBFloat16}));

TEST(TokenLogprobs, LogprobOnlyGradientAndNoEntropyRequested) {
  at::manual_seed(3);
  const at::Tensor hidden = at::randn({2, 9, 8}).requires_grad_(true);
  const at::Tensor weight = at::randn({50, 8}).requires_grad_(true);
  const at::Tensor targets = at::randint(50, {2, 9}, at::kLong);
  TokenLogprobsOptions options;
  options.chunk_tokens = 4;
  options.with_entropy = false;
  const TokenLogprobs out = token_logprobs(hidden, weight, targets, {}, options);
  EXPECT_FALSE(out.entropy.defined());
  out.logprobs.sum().backward();
  const at::Tensor grad_hidden = hidden.grad().clone(), grad_weight = weight.grad().clone();
  hidden.mutable_grad().zero_();
  weight.mutable_grad().zero_();
  const Plain plain = plain_path(hidden, weight, targets, at::ones({2, 9}, at::kBool), 1.0);
  plain.logprobs.sum().backward();
  EXPECT_LE(max_abs_diff(out.logprobs, plain.logprobs), 1e-5);
  EXPECT_LE(max_abs_diff(grad_hidden, hidden.grad()), 1e-5);
  EXPECT_LE(max_abs_diff(grad_weight, weight.grad()), 1e-5);
}

TEST(TokenLogprobs, WorksWithoutGradient) {
  at::NoGradGuard no_grad;
  const at::Tensor hidden = at::randn({4, 8}), weight = at::randn({20, 8});
  const at::Tensor targets = at::randint(20, {4}, at::kLong);
  const TokenLogprobs out = token_logprobs(hidden, weight, targets);
  EXPECT_LE(max_abs_diff(out.logprobs, plain_path(hidden, weight, targets, at::ones({4}, at::kBool), 1.0).logprobs), 1e-5);
}

TEST(TokenLogprobs, RejectsBadInput) {
  const at::Tensor hidden = at::randn({2, 3, 8}), weight = at::randn({20, 8});
  const at::Tensor targets = at::randint(20, {2, 3}, at::kLong);
  TokenLogprobsOptions options;
  options.temperature = 0.0;
  EXPECT_THROW(token_logprobs(hidden, weight, targets, {}, options), c10::Error);
  EXPECT_THROW(token_logprobs(hidden, at::randn({20, 7}), targets), c10::Error);
  EXPECT_THROW(token_logprobs(hidden, weight, at::randint(20, {2, 4}, at::kLong)), c10::Error);
  EXPECT_THROW(token_logprobs(hidden, weight, targets, at::ones({3, 2}, at::kBool)), c10::Error);
}

}  // namespace
}  // namespace grpo
