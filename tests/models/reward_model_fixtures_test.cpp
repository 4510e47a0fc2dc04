// Every case directory in GRPO_REWARD_MODEL_FIXTURES (default ../shared/fixtures/reward_models):
// the scores, pooled hidden states and pooled positions of Hugging Face *ForSequenceClassification
// models, alone, in a right-padded batch and with a pad token inside the sequence, reproduced from
// config.json + model.safetensors alone. Tolerances: the README (1e-4, pooled index exact).

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "models/sequence_classifier.h"
#include "tests/support/fixtures.h"
#include "tests/support/json_tensors.h"

namespace grpo {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr double kTolerance = 1e-4;

std::string fixture_dir() { return testing::shared_path("GRPO_REWARD_MODEL_FIXTURES", "fixtures/reward_models"); }

std::vector<std::string> case_dirs() {
  return testing::sorted_entries(fixture_dir(), [](const fs::directory_entry& e) {
    return e.is_directory() && fs::exists(e.path() / "expected.json");
  });
}

using testing::max_abs_diff;

class RewardModelFixture : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    std::ifstream in(GetParam() + "/expected.json");
    expected_ = json::parse(in);
    StatusOr<SequenceClassifier> model = SequenceClassifier::load(GetParam(), "float32");
    ASSERT_TRUE(model.is_ok()) << model.status().message();
    model_.emplace(std::move(model).value());
  }
  json expected_;
  std::optional<SequenceClassifier> model_;
};

TEST(RewardModelFixtures, DirectoryHoldsCases) { EXPECT_FALSE(case_dirs().empty()) << fixture_dir(); }

TEST_P(RewardModelFixture, ConfigMatches) {
  EXPECT_EQ(model_->options().num_labels, expected_["num_labels"].get<int64_t>());
  if (expected_["pad_token_id"].is_null()) EXPECT_FALSE(model_->options().pad_token_id.has_value());
  else EXPECT_EQ(model_->options().pad_token_id, expected_["pad_token_id"].get<int64_t>());
}

TEST_P(RewardModelFixture, SequencesAlone) {
  for (const json& sequence : expected_["sequences"]) {
    const at::Tensor ids = testing::json_to_ids(sequence["input_ids"]).unsqueeze(0);
    SCOPED_TRACE(fmt::format("length {}", ids.size(1)));
    const ClassifierOutput out = model_->forward(ids);
    EXPECT_EQ(out.pooled_index[0].item<int64_t>(), sequence["pooled_index"].get<int64_t>());
    EXPECT_LE(max_abs_diff(out.scores[0], testing::json_to_tensor(sequence["score"])), kTolerance);
    EXPECT_LE(max_abs_diff(out.pooled_hidden[0], testing::json_to_tensor(sequence["pooled_hidden"])), kTolerance);
    if (sequence.contains("all_position_scores")) {
      EXPECT_LE(max_abs_diff(model_->all_position_scores(ids)[0], testing::json_to_tensor(sequence["all_position_scores"])),
                kTolerance);
    }
  }
}

TEST_P(RewardModelFixture, RightPaddedBatch) {
  const json& batch = expected_["padded_batch"];
  const ClassifierOutput out = model_->forward(testing::json_to_ids(batch["input_ids"]), testing::json_to_ids(batch["attention_mask"]));
  EXPECT_TRUE(at::equal(out.pooled_index, testing::json_to_ids(batch["pooled_index"])));
  EXPECT_LE(max_abs_diff(out.scores, testing::json_to_tensor(batch["scores"])), kTolerance);
  EXPECT_LE(max_abs_diff(out.pooled_hidden, testing::json_to_tensor(batch["pooled_hidden"])), kTolerance);
}

// score_rows pads the rows itself: the same batch from the unpadded id lists.
TEST_P(RewardModelFixture, ScoreRowsPadsLikeTheFixture) {
  std::vector<std::vector<int64_t>> rows;
  std::vector<at::Tensor> scores;
  for (const json& sequence : expected_["sequences"]) {
    rows.push_back(sequence["input_ids"].get<std::vector<int64_t>>());
    scores.push_back(testing::json_to_tensor(sequence["score"]));
  }
  const ClassifierOutput out = model_->score_rows(rows);
  EXPECT_LE(max_abs_diff(out.scores, at::stack(scores)), kTolerance);
}

TEST_P(RewardModelFixture, PadTokenInsideSequenceCutsPooling) {
  const json& inside = expected_["pad_token_inside_sequence"];
  const ClassifierOutput out = model_->forward(testing::json_to_ids(inside["input_ids"]).unsqueeze(0));
  EXPECT_EQ(out.pooled_index[0].item<int64_t>(), inside["pooled_index"].get<int64_t>());
  EXPECT_LE(max_abs_diff(out.scores[0], testing::json_to_tensor(inside["score"])), kTolerance);
  EXPECT_LE(max_abs_diff(out.pooled_hidden[0], testing::json_to_tensor(inside["pooled_hidden"])), kTolerance);
}

INSTANTIATE_TEST_SUITE_P(Cases, RewardModelFixture, ::testing::ValuesIn(case_dirs()), testing::fixture_case_name);
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(RewardModelFixture);

}  // namespace
}  // namespace grpo
