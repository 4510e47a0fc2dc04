// Block-wise attention against the path the decoder used before it: full scores, an additive
// [B, 1, T, S] bias (causal + key padding, lowest finite value), float32 softmax, written out
// here as the second opinion. Values and gradients, causal, left/right padding, grouped heads.

#include <limits>

#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/autograd.h>

#include "kernels/attention.h"

namespace grpo {
namespace {

double max_abs_diff(const at::Tensor& a, const at::Tensor& b) {
  return (a.to(at::kDouble) - b.to(at::kDouble)).abs().max().item<double>();
}

// [B, T, S] bool: which keys query i (at slot offset + i) may see.
at::Tensor allowed_pairs(const at::Tensor& key_mask, int64_t queries, int64_t offset) {
  const int64_t keys = key_mask.size(1);
  const at::Tensor causal = at::arange(keys).unsqueeze(0) <= (at::arange(queries) + offset).unsqueeze(1);
  return causal.unsqueeze(0) & key_mask.unsqueeze(1);
}

at::Tensor bias_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& key_mask,
                          int64_t offset) {
  const int64_t b = q.size(0), h = q.size(1), t = q.size(2), d = q.size(3), kv = k.size(1), s = k.size(2);
  const at::Tensor allowed = allowed_pairs(key_mask, t, offset);
  const double lowest = q.scalar_type() == at::kBFloat16 ? -3.3895313892515355e38
                                                        : static_cast<double>(std::numeric_limits<float>::lowest());
  const auto options = q.options().requires_grad(false);
  const at::Tensor bias = at::where(allowed, at::zeros({}, options), at::full({}, lowest, options)).unsqueeze(1);
  const at::Tensor grouped_q = q.reshape({b, kv, (h / kv) * t, d});
  const at::Tensor scores = at::matmul(grouped_q, k.transpose(2, 3)).view({b, h, t, s}) / std::sqrt(double(d)) + bias;
  const at::Tensor probs = at::softmax(scores, -1, at::kFloat).to(q.scalar_type());
  return at::matmul(probs.view({b, kv, (h / kv) * t, s}), v).view({b, h, t, d});
}

struct Case {
  const char* name;
  int64_t heads, kv_heads, queries, keys, offset;
  std::vector<int64_t> left_pad, right_pad;  // per row
  int64_t query_block, key_block;
  int64_t dim = 8;
};

struct Grads {
  at::Tensor out, dq, dk, dv;
};

enum class Path { kBias, kReference, kDispatch };

Grads run(const Case& c, Path path, at::ScalarType dtype = at::kFloat) {
  const int64_t b = static_cast<int64_t>(c.left_pad.size()), d = c.dim;
  at::manual_seed(11);
  at::Tensor q = at::randn({b, c.heads, c.queries, d}).to(dtype).requires_grad_(true);
  at::Tensor k = at::randn({b, c.kv_heads, c.keys, d}).to(dtype).requires_grad_(true);
  at::Tensor v = at::randn({b, c.kv_heads, c.keys, d}).to(dtype).requires_grad_(true);
  at::Tensor key_mask = at::ones({b, c.keys}, at::kBool);
  for (int64_t row = 0; row < b; ++row) {
    key_mask[row].narrow(0, 0, c.left_pad[row]).fill_(false);
    key_mask[row].narrow(0, c.keys - c.right_pad[row], c.right_pad[row]).fill_(false);
  }
  // Queries that see no key (left padding) are zeros in the new path and a uniform average in the
  // old one; neither reaches a real token, so the loss weighs only queries that see a key.
  const at::Tensor sees_key = allowed_pairs(key_mask, c.queries, c.offset).any(-1).unsqueeze(1).unsqueeze(-1);
  const at::Tensor upstream = at::randn({b, c.heads, c.queries, d}) * sees_key;
  Grads g;
  if (path != Path::kBias) {
    AttentionOptions options;
    options.query_block = c.query_block;
    options.key_block = c.key_block;
    g.out = path == Path::kReference ? attention_reference(q, k, v, key_mask, c.offset, options)
                                     : attention(q, k, v, key_mask, c.offset, options);
    EXPECT_EQ(max_abs_diff(g.out * sees_key.logical_not(), at::zeros({}, at::kFloat)), 0.0) << "blind rows are zero";
  } else {
    g.out = bias_attention(q, k, v, key_mask, c.offset);
  }
  (g.out.to(at::kFloat) * upstream).sum().backward();
  g.out = g.out * sees_key;
  g.dq = q.grad();
  g.dk = k.grad();
  g.dv = v.grad();
  return g;
}

class AttentionCases : public ::testing::TestWithParam<Case> {};

// The reference, and `attention` as this build dispatches it (on float32 CPU inputs that fit one
// block: the softmax kernel where the CPU has AVX-512F).
TEST_P(AttentionCases, ValuesAndGradientsEqualTheBiasPath) {
  const Case c = GetParam();
  const Grads want = run(c, Path::kBias);
  for (const Path path : {Path::kReference, Path::kDispatch}) {
    const Grads got = run(c, path);
    const char* name = path == Path::kReference ? "reference" : "dispatch";
    EXPECT_LE(max_abs_diff(got.out, want.out), 1e-5) << name;
    EXPECT_LE(max_abs_diff(got.dq, want.dq), 1e-5) << name;
    EXPECT_LE(max_abs_diff(got.dk, want.dk), 1e-5) << name;
    EXPECT_LE(max_abs_diff(got.dv, want.dv), 1e-5) << name;
  }
}

TEST_P(AttentionCases, Bfloat16WithinTolerance) {
  const Case c = GetParam();
  const Grads got = run(c, Path::kReference, at::kBFloat16), want = run(c, Path::kBias, at::kFloat);
  EXPECT_LE(max_abs_diff(got.out, want.out), 3e-2);
  EXPECT_LE(max_abs_diff(got.dv, want.dv), 6e-2);
}

std::string case_name(const ::testing::TestParamInfo<Case>& info) { return info.param.name; }

INSTANTIATE_TEST_SUITE_P(
    CausalPaddingGroups, AttentionCases,
    ::testing::Values(Case{"CausalBlocks", 2, 2, 11, 11, 0, {0}, {0}, 4, 3},
                      Case{"CausalOneBlock", 2, 2, 11, 11, 0, {0}, {0}, 256, 512},
                      Case{"LeftPadding", 4, 2, 13, 13, 0, {0, 5, 12}, {0, 0, 0}, 4, 5},
                      Case{"RightPadding", 4, 2, 13, 13, 0, {0, 0, 0}, {0, 3, 9}, 5, 4},
                      Case{"LeftAndRightPadding", 6, 2, 10, 10, 0, {2, 0}, {3, 1}, 3, 4},
                      Case{"GroupOfThreeOneBlock", 6, 2, 9, 9, 0, {3, 0}, {0, 2}, 64, 64},
                      Case{"OneBlockManyKeys", 4, 2, 37, 37, 0, {0, 6, 37}, {0, 4, 0}, 256, 512},
                      Case{"OneBlockAfterCache", 4, 2, 20, 45, 25, {3, 0}, {0, 5}, 256, 512},
                      Case{"OneBlockHeadDim64", 4, 2, 45, 45, 0, {0, 7}, {3, 0}, 256, 512, 64},
                      Case{"OneBlockHeadDim40AfterCache", 6, 2, 19, 70, 51, {5, 0}, {0, 9}, 256, 512, 40},
                      Case{"PrefillAfterCache", 4, 1, 5, 12, 7, {2, 0}, {0, 0}, 2, 5},
                      Case{"SingleQueryDecode", 4, 2, 1, 9, 8, {3, 0}, {0, 0}, 1, 4}),
    case_name);

TEST(Attention, DispatchEqualsReferenceOnThisBuild) {
  at::manual_seed(5);
  const at::Tensor q = at::randn({2, 4, 6, 8}), k = at::randn({2, 2, 6, 8}), v = at::randn({2, 2, 6, 8});
  const at::Tensor key_mask = at::tensor({0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0}).to(at::kBool).view({2, 6});
  AttentionOptions options;
  options.query_block = 2;
  options.key_block = 4;
  const at::Tensor reference = attention_reference(q, k, v, key_mask, 0, options);
  EXPECT_LE(max_abs_diff(attention(q, k, v, key_mask, 0, options), reference), 1e-5)
      << (attention_uses_sdpa() ? "scaled_dot_product_attention" : "ATen reference");
}

TEST(Attention, RejectsMismatchedShapes) {
  const at::Tensor q = at::randn({1, 3, 4, 8}), k = at::randn({1, 2, 4, 8});
  EXPECT_THROW(attention(q, k, k, {}, 0), c10::Error);  // 3 heads over 2 kv heads
  const at::Tensor q4 = at::randn({1, 4, 4, 8});
  EXPECT_THROW(attention(q4, k, k, at::ones({1, 5}, at::kBool), 0), c10::Error);
}

}  // namespace
}  // namespace grpo
