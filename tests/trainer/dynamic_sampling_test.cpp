// DAPO dynamic sampling's pieces: which groups carry signal, which are kept (global order, at most
// the wanted number), and rows of several rollout batches gathered into one re-padded batch.

#include "trainer/dynamic_sampling.h"

#include <ATen/ATen.h>
#include <gtest/gtest.h>

namespace grpo {
namespace {

TEST(DynamicSampling, GroupsWithSignalHaveUnequalRewards) {
  EXPECT_EQ(groups_with_signal({1, 0, 0, 0, 2, 2}, 2), (std::vector<bool>{true, false, false}));
  EXPECT_EQ(groups_with_signal({0.5f, 0.5f, 0.5f}, 3), (std::vector<bool>{false}));
}

TEST(DynamicSampling, KeepsTheFirstGroupsWithSignalRoundByRound) {
  const std::vector<std::vector<bool>> signal = {{false, true, false, true}, {true, true, false, false}};
  EXPECT_EQ(first_signal_groups(signal, 3), (std::vector<GroupRef>{{0, 1}, {0, 3}, {1, 0}}));
  EXPECT_EQ(first_signal_groups(signal, 10), (std::vector<GroupRef>{{0, 1}, {0, 3}, {1, 0}, {1, 1}}));
  EXPECT_TRUE(first_signal_groups({{false, false}}, 2).empty());
}

// Rounds that ran out with too few groups with signal are filled with the first flat ones, so the
// batch keeps its size (and every rank its rows); a full list is left as it is.
TEST(DynamicSampling, ShortOfSignalTheBatchIsFilledWithFlatGroups) {
  const std::vector<std::vector<bool>> signal = {{false, true, false, false}, {true, false, false, false}};
  const std::vector<GroupRef> kept = first_signal_groups(signal, 4);
  ASSERT_EQ(kept, (std::vector<GroupRef>{{0, 1}, {1, 0}}));
  EXPECT_EQ(filled_with_flat_groups(kept, signal, 4), (std::vector<GroupRef>{{0, 1}, {1, 0}, {0, 0}, {0, 2}}));
  EXPECT_EQ(filled_with_flat_groups(kept, signal, 2), kept);
  EXPECT_EQ(filled_with_flat_groups({}, {{false, false}}, 2), (std::vector<GroupRef>{{0, 0}, {0, 1}}));
}

// A batch in the engine's layout from unpadded rows.
RolloutBatch batch_of(const std::vector<std::vector<int64_t>>& prompts, const std::vector<std::vector<int64_t>>& completions,
                      int64_t pad) {
  const int64_t n = static_cast<int64_t>(prompts.size());
  int64_t p = 0, c = 0;
  for (const auto& x : prompts) p = std::max<int64_t>(p, static_cast<int64_t>(x.size()));
  for (const auto& x : completions) c = std::max<int64_t>(c, static_cast<int64_t>(x.size()));
  RolloutBatch b;
  b.group_size = 1;
  b.prompt_ids = at::full({n, p}, pad, at::kLong);
  b.prompt_mask = at::zeros({n, p}, at::kBool);
  b.completion_ids = at::full({n, c}, pad, at::kLong);
  b.completion_mask = at::zeros({n, c}, at::kBool);
  b.sampling_logp = at::zeros({n, c}, at::kFloat);
  for (int64_t i = 0; i < n; ++i) {
    const auto lp = static_cast<int64_t>(prompts[i].size()), lc = static_cast<int64_t>(completions[i].size());
    b.prompt_ids[i].narrow(0, p - lp, lp).copy_(at::tensor(prompts[i], at::kLong));
    b.prompt_mask[i].narrow(0, p - lp, lp).fill_(true);
    b.completion_ids[i].narrow(0, 0, lc).copy_(at::tensor(completions[i], at::kLong));
    b.completion_mask[i].narrow(0, 0, lc).fill_(true);
    for (int64_t t = 0; t < lc; ++t) b.sampling_logp[i][t] = -0.5f * static_cast<float>(completions[i][t]);
    b.finish_reasons.push_back(lc == 3 ? FinishReason::kLength : FinishReason::kStopToken);
  }
  return b;
}

TEST(DynamicSampling, GatheredRowsAreRepaddedToTheKeptRows) {
  const RolloutBatch a = batch_of({{1, 2, 3, 4, 5}, {6}}, {{7}, {8, 9, 10}}, 0);
  const RolloutBatch b = batch_of({{11, 12}, {13, 14, 15}}, {{16, 17}, {18}}, 0);
  const RolloutBatch out = gather_rows({&a, &b}, {{1, 1}, {0, 1}, {1, 0}}, 0);
  // Widest kept prompt: 3 tokens; widest kept completion: 3 tokens.
  EXPECT_TRUE(out.prompt_ids.equal(at::tensor({13, 14, 15, 0, 0, 6, 0, 11, 12}, at::kLong).view({3, 3})));
  EXPECT_TRUE(out.prompt_mask.equal(at::tensor({1, 1, 1, 0, 0, 1, 0, 1, 1}, at::kLong).view({3, 3}).to(at::kBool)));
  EXPECT_TRUE(out.completion_ids.equal(at::tensor({18, 0, 0, 8, 9, 10, 16, 17, 0}, at::kLong).view({3, 3})));
  EXPECT_TRUE(out.completion_mask.equal(out.completion_ids != 0));
  EXPECT_TRUE(out.sampling_logp.equal(-0.5f * out.completion_ids.to(at::kFloat)));
  EXPECT_EQ(out.finish_reasons, (std::vector<FinishReason>{FinishReason::kStopToken, FinishReason::kLength,
                                                           FinishReason::kStopToken}));
}

}  // namespace
}  // namespace grpo
