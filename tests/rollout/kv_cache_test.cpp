// The decode path's cache: a prompt prefix shared by groups of rows, rows dropped (the prefix then
// read through an index), and the ring of rows' own slots, each against a full recompute without
// a cache.

#include "models/decoder.h"

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

namespace grpo {
namespace {

Decoder random_decoder() {
  DecoderOptions o;
  o.vocab_size = 50; o.hidden_size = 32; o.intermediate_size = 48; o.num_layers = 2;
  o.num_heads = 4; o.num_kv_heads = 2; o.head_dim = 8; o.qkv_bias = true; o.tie_word_embeddings = true;
  at::manual_seed(3);
  Decoder model(o);
  at::NoGradGuard no_grad;
  for (auto& p : model->parameters()) p.normal_(0, 0.3);
  return model;
}

class SharedPrefixCache : public ::testing::Test {
 protected:
  // Two left-padded prompts (5 and 3 tokens), 3 rows each.
  void SetUp() override {
    model_ = random_decoder();
    prompts_ = at::tensor({1, 2, 3, 4, 5, 0, 0, 7, 8, 9}, at::kLong).view({2, 5});
    prompt_mask_ = at::tensor({1, 1, 1, 1, 1, 0, 0, 1, 1, 1}, at::kLong).view({2, 5}).to(at::kBool);
    fed_.assign(6, {});
  }

  // Logits of `row`'s next token recomputed from its prompt and every token it was fed.
  at::Tensor recomputed(int64_t row) {
    const int64_t p = row / 3;
    const at::Tensor fed = at::tensor(fed_[static_cast<size_t>(row)], at::kLong);
    const at::Tensor ids = at::cat({prompts_[p], fed}).unsqueeze(0);
    const at::Tensor mask = at::cat({prompt_mask_[p], at::ones({fed.size(0)}, at::kBool)}).unsqueeze(0);
    return model_->forward(ids, mask)[0][-1];
  }

  // Feeds one random token to every row of `rows` (cache row order) and returns the logits.
  at::Tensor feed(KvCache& cache, const std::vector<int64_t>& rows) {
    const at::Tensor tokens = at::randint(1, 50, {static_cast<int64_t>(rows.size())}, at::kLong);
    for (size_t i = 0; i < rows.size(); ++i) fed_[static_cast<size_t>(rows[i])].push_back(tokens[i].item<int64_t>());
    return model_->forward(tokens.view({-1, 1}), at::Tensor(), &cache).select(1, 0);
  }

  Decoder model_{nullptr};
  at::Tensor prompts_, prompt_mask_;
  std::vector<std::vector<int64_t>> fed_;
};

TEST_F(SharedPrefixCache, DecodeEqualsRecomputeWithGroupedAndGatheredPrefix) {
  at::NoGradGuard no_grad;
  KvCache prefix = model_->make_cache(2, 5);
  model_->forward(prompts_, prompt_mask_, &prefix);
  KvCache cache = model_->make_cache(6, 8);
  cache.share_prefix(prefix, 3);
  cache.reset_rows(0, 3, at::full({3}, 5, at::kLong));
  cache.reset_rows(3, 3, at::full({3}, 3, at::kLong));
  // The prefix is stored once per prompt, not once per row.
  EXPECT_EQ(cache.prefix_keys[0].size(0), 2);
  std::vector<int64_t> rows{0, 1, 2, 3, 4, 5};
  at::Tensor logits;
  for (int step = 0; step < 4; ++step) logits = feed(cache, rows);
  for (size_t i = 0; i < rows.size(); ++i)
    EXPECT_LE((logits[static_cast<int64_t>(i)] - recomputed(rows[i])).abs().max().item<double>(), 1e-4) << i;
  // Drop rows: the rest read the prefix through their index.
  rows = {5, 1, 3};
  cache.keep_rows(at::tensor(rows, at::kLong));
  EXPECT_EQ(cache.prefix_group, 0);
  for (int step = 0; step < 2; ++step) logits = feed(cache, rows);
  for (size_t i = 0; i < rows.size(); ++i)
    EXPECT_LE((logits[static_cast<int64_t>(i)] - recomputed(rows[i])).abs().max().item<double>(), 1e-4) << rows[i];
}

TEST_F(SharedPrefixCache, RingSlotsAreReusedByRowsThatStartOver) {
  at::NoGradGuard no_grad;
  KvCache prefix = model_->make_cache(2, 5);
  model_->forward(prompts_, prompt_mask_, &prefix);
  KvCache cache = model_->make_cache(6, 3);  // room for three fed tokens per row
  cache.ring = true;
  cache.share_prefix(prefix, 3);
  cache.reset_rows(0, 3, at::full({3}, 5, at::kLong));
  cache.reset_rows(3, 3, at::full({3}, 3, at::kLong));
  const std::vector<int64_t> all{0, 1, 2, 3, 4, 5};
  feed(cache, all);
  feed(cache, all);
  // Prompt 1's rows start over (new samples); prompt 0's rows get their third and last token.
  cache.reset_rows(3, 3, at::full({3}, 3, at::kLong));
  for (int64_t r = 3; r < 6; ++r) fed_[static_cast<size_t>(r)].clear();
  at::Tensor logits = feed(cache, all);
  for (int64_t r = 0; r < 6; ++r) EXPECT_LE((logits[r] - recomputed(r)).abs().max().item<double>(), 1e-4) << r;
  // The cache is full: the next tokens wrap to slot 0, over prompt 0's rows (finished by now).
  for (int step = 0; step < 2; ++step) logits = feed(cache, all);
  EXPECT_EQ(cache.length, 2);
  for (int64_t r = 3; r < 6; ++r) EXPECT_LE((logits[r] - recomputed(r)).abs().max().item<double>(), 1e-4) << r;
}

// The fused projections (q|k|v, gate|up as one GEMM over weight copies) against the plain
// modules, through a shared-prefix decode, and after the parameters change in place: a stale copy
// would keep the old weights' logits.
TEST_F(SharedPrefixCache, FusedInferenceEqualsPlainForwardAndFollowsParameterUpdates) {
  at::NoGradGuard no_grad;
  const auto decode_logits = [&](bool fused) {
    model_->set_fused_inference(fused);
    KvCache prefix = model_->make_cache(2, 5);
    const at::Tensor prefill = model_->forward(prompts_, prompt_mask_, &prefix);
    KvCache cache = model_->make_cache(6, 4);
    cache.share_prefix(prefix, 3);
    cache.reset_rows(0, 3, at::full({3}, 5, at::kLong));
    cache.reset_rows(3, 3, at::full({3}, 3, at::kLong));
    at::manual_seed(11);
    std::vector<at::Tensor> out{prefill};
    for (int step = 0; step < 3; ++step) out.push_back(feed(cache, {0, 1, 2, 3, 4, 5}));
    model_->set_fused_inference(false);
    return out;
  };
  const auto expect_equal = [](const std::vector<at::Tensor>& a, const std::vector<at::Tensor>& b) {
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) EXPECT_LE((a[i] - b[i]).abs().max().item<double>(), 1e-5) << i;
  };
  model_->set_fused_inference(true);
  model_->forward(prompts_, prompt_mask_);  // builds the fused copies of the current weights
  const std::vector<at::Tensor> fused_before = decode_logits(true);
  expect_equal(fused_before, decode_logits(false));
  // An optimizer-like in-place update of every projection while fused inference stays on.
  model_->set_fused_inference(true);
  model_->forward(prompts_, prompt_mask_);
  for (auto& item : model_->named_parameters())
    if (item.key().find("_proj.") != std::string::npos) item.value().mul_(0.5).add_(0.01);
  const std::vector<at::Tensor> fused_after = decode_logits(true);
  expect_equal(fused_after, decode_logits(false));
  EXPECT_GT((fused_after[0] - fused_before[0]).abs().max().item<double>(), 1e-2);
}

TEST(KvCache, WithoutRingExceedingCapacityIsAnError) {
  at::NoGradGuard no_grad;
  Decoder model = random_decoder();
  KvCache cache = model->make_cache(1, 2);
  model->forward(at::tensor({1, 2}, at::kLong).view({1, 2}), at::Tensor(), &cache);
  EXPECT_THROW(model->forward(at::tensor({3}, at::kLong).view({1, 1}), at::Tensor(), &cache), c10::Error);
}

}  // namespace
}  // namespace grpo
