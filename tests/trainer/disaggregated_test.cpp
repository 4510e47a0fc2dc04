// The scored batch on the wire between rollout ranks and trainers: exact both ways (NaN rewards,
// a rank with no rows), and the trainers' even split of the parts' groups.

#include "trainer/disaggregated.h"

#include <cmath>

#include <ATen/ATen.h>
#include <gtest/gtest.h>

namespace grpo {
namespace {

// `groups` groups of 2 rows with completions of different lengths; row r's reward is first + r.
ScoredBatch make_part(int64_t groups, double first, int64_t version) {
  ScoredBatch part;
  const int64_t n = groups * 2;
  RolloutBatch& b = part.batch;
  b.group_size = 2;
  b.policy_version = version;
  b.prompt_ids = at::arange(n * 3, at::kLong).view({n, 3});
  b.prompt_mask = at::ones({n, 3}, at::kBool);
  b.completion_ids = at::arange(n * 4, at::kLong).view({n, 4}) + 100;
  b.completion_mask = at::ones({n, 4}, at::kBool);
  for (int64_t row = 0; row < n; ++row) b.completion_mask[row].narrow(0, 1 + row % 3, 3 - row % 3).fill_(false);
  b.sampling_logp = at::randn({n, 4}) * b.completion_mask;
  for (int64_t row = 0; row < n; ++row) {
    b.finish_reasons.push_back(row % 2 ? FinishReason::kLength : FinishReason::kStopToken);
    b.prompt_index.push_back(row / 2);
    RewardSample s;
    s.id = "p" + std::to_string(row);
    s.prompt = "1+1=";
    s.completion = "<answer>2</answer>";
    s.fields = {{"answer", "2"}};
    s.completion_tokens = 1 + row % 3;
    part.samples.push_back(s);
    SampleScores score;
    score.total = first + static_cast<double>(row);
    score.rewards["math"] = 0.1 * static_cast<double>(row);
    score.components["math.correct"] = 1.0 / 3.0;
    part.scores.push_back(score);
  }
  part.generated_groups = 8;
  part.kept_groups = 5;
  part.reward_errors = 1;
  part.rollout_seconds = first;
  part.reward_seconds = 0.25;
  part.data_cursor = {{"epoch", 2}, {"position", 12}};
  return part;
}

TEST(ScoredBatchWire, RoundTripIsExact) {
  ScoredBatch part = make_part(2, 0.5, 7);
  part.scores[1].total = std::nan("");
  part.scores[2].errors = {"math: timeout"};
  part.scores[2].reasons["math"] = "no answer";
  const ScoredBatch back = decode_scored_batch(encode_scored_batch(part));
  EXPECT_EQ(back.batch.policy_version, 7);
  EXPECT_EQ(back.batch.group_size, 2);
  for (const auto& [a, b] : {std::pair{&part.batch.prompt_ids, &back.batch.prompt_ids},
                             {&part.batch.prompt_mask, &back.batch.prompt_mask},
                             {&part.batch.completion_ids, &back.batch.completion_ids},
                             {&part.batch.completion_mask, &back.batch.completion_mask},
                             {&part.batch.sampling_logp, &back.batch.sampling_logp}})
    EXPECT_TRUE(a->equal(*b));
  EXPECT_EQ(back.batch.finish_reasons, part.batch.finish_reasons);
  EXPECT_EQ(back.batch.prompt_index, part.batch.prompt_index);
  ASSERT_EQ(back.scores.size(), part.scores.size());
  EXPECT_TRUE(std::isnan(back.scores[1].total));
  EXPECT_EQ(back.scores[0].total, 0.5);
  EXPECT_EQ(back.scores[3].rewards.at("math"), part.scores[3].rewards.at("math"));
  EXPECT_EQ(back.scores[3].components.at("math.correct"), 1.0 / 3.0);
  EXPECT_EQ(back.scores[2].errors, part.scores[2].errors);
  EXPECT_EQ(back.scores[2].reasons, part.scores[2].reasons);
  EXPECT_EQ(back.samples[3].fields, part.samples[3].fields);
  EXPECT_EQ(back.samples[3].completion_tokens, part.samples[3].completion_tokens);
  EXPECT_EQ(back.generated_groups, 8);
  EXPECT_EQ(back.kept_groups, 5);
  EXPECT_EQ(back.reward_errors, 1);
  EXPECT_EQ(back.data_cursor, part.data_cursor);

  // A rollout rank without prompts sends a part without rows.
  ScoredBatch empty;
  empty.data_cursor = part.data_cursor;
  const ScoredBatch none = decode_scored_batch(encode_scored_batch(empty));
  EXPECT_FALSE(none.batch.completion_ids.defined());
  EXPECT_TRUE(none.samples.empty());
}

TEST(ScoredBatchWire, TrainersSplitTheGroupsEvenlyInOrder) {
  // Two rollout ranks' parts: 3 groups and 2 groups; 5 groups over 2 trainers: 2 and 3.
  const std::vector<ScoredBatch> parts = {make_part(3, 0.0, 4), make_part(2, 100.0, 4)};
  const ScoredBatch first = trainer_share(parts, 0, 2, /*pad_id=*/0);
  const ScoredBatch second = trainer_share(parts, 1, 2, 0);
  ASSERT_EQ(first.scores.size(), 4u);
  ASSERT_EQ(second.scores.size(), 6u);
  const std::vector<double> want = {0, 1, 2, 3, 4, 5, 100, 101, 102, 103};
  std::vector<double> got;
  for (const ScoredBatch* s : {&first, &second})
    for (const SampleScores& score : s->scores) got.push_back(score.total);
  EXPECT_EQ(got, want);
  EXPECT_EQ(first.kept_groups, 5);
  EXPECT_EQ(first.batch.policy_version, 4);
  // Failed evaluations are counted once (on trainer 0), timings are the slowest part's.
  EXPECT_EQ(first.reward_errors, 2);
  EXPECT_EQ(second.reward_errors, 0);
  EXPECT_EQ(second.rollout_seconds, 100.0);
  // Rows keep their tokens, re-padded to the share's longest completion.
  EXPECT_EQ(second.batch.completion_ids.size(0), 6);
  EXPECT_TRUE(second.batch.completion_ids[0].narrow(0, 0, 1).equal(parts[0].batch.completion_ids[4].narrow(0, 0, 1)));
  EXPECT_TRUE(second.batch.sampling_logp[2].equal(parts[1].batch.sampling_logp[0].narrow(0, 0, second.batch.sampling_logp.size(1))));
}

}  // namespace
}  // namespace grpo
