// The `reward_model` reward: normalization by hand, batched scoring equal to one sample at a time,
// the text path (prompt + completion -> ids -> the fixture-checked classifier) and the weighted sum
// with a rule reward in a RewardSet; a Llama classifier of another shape against the causal decoder.

#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "core/config.h"
#include "core/thread_pool.h"
#include "models/decoder.h"
#include "models/safetensors.h"
#include "models/sequence_classifier.h"
#include "models/tokenizer.h"
#include "rewards/reward.h"
#include "rewards/reward_set.h"
#include "tests/support/fixtures.h"
#include "trainer/reward_model_reward.h"

namespace grpo {
namespace {

using nlohmann::json;

std::string tiny_reward_model() {
  return testing::shared_path("GRPO_REWARD_MODEL_FIXTURES", "fixtures/reward_models") + "/qwen2-reward-tiny";
}

json options(int64_t batch_size, const std::string& normalize = "none") {
  return {{"model", tiny_reward_model()}, {"tokenizer", "builtin:bytes"}, {"chat_template", "none"},
          {"batch_size", batch_size}, {"normalize", normalize}};
}

std::vector<RewardSample> samples() {
  const std::vector<std::pair<std::string, std::string>> texts = {
      {"What is 2+2? ", "4"}, {"Name a colour. ", "Blue, or perhaps a deep ultramarine."}, {"Hi", "!"},
      {"Explain gravity briefly. ", "Mass attracts mass."}, {"x", "yz"}};
  std::vector<RewardSample> out;
  for (size_t i = 0; i < texts.size(); ++i) {
    RewardSample s;
    s.id = "s" + std::to_string(i);
    s.prompt = texts[i].first;
    s.completion = texts[i].second;
    out.push_back(s);
  }
  return out;
}

std::unique_ptr<Reward> make(const json& opts) {
  register_model_rewards();
  StatusOr<std::unique_ptr<Reward>> reward = make_reward("reward_model", opts);
  if (!reward) throw std::runtime_error(reward.status().message());
  return std::move(reward).value();
}

TEST(RewardNormalization, ZScoreAndSigmoidByHand) {
  // mean 2, population std sqrt(2/3)
  const std::vector<double> z = normalize_reward_scores({1, 2, 3}, RewardNormalization::kZScore);
  EXPECT_NEAR(z[0], -1.0 / std::sqrt(2.0 / 3.0), 1e-12);
  EXPECT_NEAR(z[1], 0.0, 1e-12);
  EXPECT_NEAR(z[2], 1.0 / std::sqrt(2.0 / 3.0), 1e-12);
  EXPECT_EQ(normalize_reward_scores({5, 5}, RewardNormalization::kZScore), (std::vector<double>{0, 0}));
  const std::vector<double> s = normalize_reward_scores({0, std::log(3.0)}, RewardNormalization::kSigmoid);
  EXPECT_NEAR(s[0], 0.5, 1e-12);
  EXPECT_NEAR(s[1], 0.75, 1e-12);
  EXPECT_EQ(normalize_reward_scores({-1.5, 2}, RewardNormalization::kNone), (std::vector<double>{-1.5, 2}));
}

TEST(RewardModelReward, BatchedEqualsOneByOne) {
  const auto batched = make(options(2))->score_batch(samples());
  const auto single = make(options(1));
  ASSERT_EQ(batched.size(), samples().size());
  for (size_t i = 0; i < batched.size(); ++i) {
    const RewardScore alone = single->score(samples()[i]);
    EXPECT_NEAR(batched[i].score, alone.score, 1e-4) << samples()[i].id;
    EXPECT_EQ(batched[i].components.at("raw"), batched[i].score);
  }
}

// The text path: the byte-level ids of prompt + completion, scored by the classifier the fixture
// test checks against transformers.
TEST(RewardModelReward, ScoresPromptPlusCompletionIds) {
  StatusOr<SequenceClassifier> model = SequenceClassifier::load(tiny_reward_model());
  ASSERT_TRUE(model.is_ok()) << model.status().message();
  const std::vector<RewardSample> all = samples();
  const auto scores = make(options(8))->score_batch(all);
  for (size_t i = 0; i < scores.size(); ++i) {
    const RewardSample& s = all[i];
    const std::vector<int64_t> ids = Tokenizer::byte_level().encode(s.prompt + s.completion);
    const double want = model->forward(at::tensor(ids, at::kLong).unsqueeze(0)).scores[0][0].item<double>();
    EXPECT_NEAR(scores[i].score, want, 1e-4) << s.id;
  }
}

TEST(RewardModelReward, NormalizesOverTheBatch) {
  const auto raw = make(options(2))->score_batch(samples());
  const auto z = make(options(2, "zscore"))->score_batch(samples());
  const auto sig = make(options(2, "sigmoid"))->score_batch(samples());
  std::vector<double> raw_scores;
  for (const auto& r : raw) raw_scores.push_back(r.score);
  const auto want_z = normalize_reward_scores(raw_scores, RewardNormalization::kZScore);
  double mean = 0;
  for (size_t i = 0; i < raw.size(); ++i) {
    EXPECT_NEAR(z[i].score, want_z[i], 1e-4);
    EXPECT_NEAR(sig[i].score, 1.0 / (1.0 + std::exp(-raw[i].score)), 1e-6);
    mean += z[i].score / static_cast<double>(raw.size());
  }
  EXPECT_NEAR(mean, 0.0, 1e-9);
}

TEST(RewardModelReward, CombinesWithRuleRewardsByWeight) {
  register_model_rewards();
  RewardFunctionConfig model_fn{"reward_model", "", 0.5, options(4, "sigmoid")};
  RewardFunctionConfig format_fn{"format", "", 1.0, json::object()};
  StatusOr<RewardSet> set = RewardSet::create({model_fn, format_fn});
  ASSERT_TRUE(set.is_ok()) << set.status().message();
  ThreadPool pool(2);
  const auto results = set->score(samples(), RewardConfig{}, pool);
  const auto alone = make(options(1, "none"));
  for (size_t i = 0; i < results.size(); ++i) {
    const double sigmoid = 1.0 / (1.0 + std::exp(-alone->score(samples()[i]).score));
    EXPECT_NEAR(results[i].rewards.at("reward_model"), sigmoid, 1e-4);
    EXPECT_NEAR(results[i].total, 0.5 * results[i].rewards.at("reward_model") + results[i].rewards.at("format"), 1e-12);
    EXPECT_TRUE(results[i].components.count("reward_model.raw"));
  }
}

TEST(RewardModelReward, BadOptionsNameTheProblem) {
  register_model_rewards();
  json no_model = options(2);
  no_model.erase("model");
  EXPECT_NE(make_reward("reward_model", no_model).status().message().find("'model' is required"), std::string::npos);
  json bad_norm = options(2, "softmax");
  EXPECT_NE(make_reward("reward_model", bad_norm).status().message().find("none, zscore or sigmoid"), std::string::npos);
  json bad_label = options(2);
  bad_label["label"] = 1;
  EXPECT_NE(make_reward("reward_model", bad_label).status().message().find("'label' must be in [0, 1)"),
            std::string::npos);
  json typo = options(2);
  typo["batchsize"] = 3;
  EXPECT_NE(make_reward("reward_model", typo).status().message().find("batchsize"), std::string::npos);
  json causal = options(2);
  causal["model"] = testing::shared_path("GRPO_MODEL_FIXTURES", "fixtures/models") + "/qwen2-tiny";
  const std::string message = make_reward("reward_model", causal).status().message();
  EXPECT_NE(message.find("ForSequenceClassification"), std::string::npos) << message;
}

TEST(RewardModelReward, TooLongSequenceNamesTheSample) {
  RewardSample long_sample;
  long_sample.id = "long";
  long_sample.completion = std::string(3000, 'a');  // the fixture's max_position_embeddings is 2048
  try {
    make(options(2))->score_batch({samples()[0], long_sample});
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("sample 'long': 3000 tokens exceed"), std::string::npos) << e.what();
  }
}

// A Llama of another shape than the reward fixture (llama3 RoPE scaling, two labels from id2label,
// pad token 7): the causal fixture's lm_head rows 0-1 as the score head must reproduce the causal
// decoder's logits 0-1 at the last real token, alone and right-padded.
TEST(SequenceClassifier, LlamaScoreHeadEqualsCausalLogitsAtThePooledToken) {
  namespace fs = std::filesystem;
  const std::string causal = testing::shared_path("GRPO_MODEL_FIXTURES", "fixtures/models") + "/llama-tiny";
  if (!fs::exists(causal + "/config.json")) GTEST_SKIP() << causal << " is not there";
  std::ifstream config_in(causal + "/config.json");
  json config = json::parse(config_in);
  config["architectures"] = {"LlamaForSequenceClassification"};
  config["id2label"] = {{"0", "LABEL_0"}, {"1", "LABEL_1"}};
  config["pad_token_id"] = 7;
  const fs::path dir = fs::temp_directory_path() / ("llama_rm_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::ofstream(dir / "config.json") << config.dump();
  StatusOr<TensorMap> tensors = read_safetensors_dir(causal);
  ASSERT_TRUE(tensors.is_ok()) << tensors.status().message();
  (*tensors)["score.weight"] = tensors->at("lm_head.weight").narrow(0, 0, 2).clone();
  tensors->erase("lm_head.weight");
  ASSERT_TRUE(write_safetensors((dir / "model.safetensors").string(), *tensors).is_ok());

  StatusOr<SequenceClassifier> model = SequenceClassifier::load(dir.string());
  ASSERT_TRUE(model.is_ok()) << model.status().message();
  EXPECT_EQ(model->options().num_labels, 2);
  StatusOr<Decoder> decoder = load_decoder(causal);
  ASSERT_TRUE(decoder.is_ok()) << decoder.status().message();
  const std::vector<std::vector<int64_t>> rows = {{5, 9, 300, 42, 11}, {100, 200}, {1, 2, 3, 4, 5, 6, 8, 9, 10}};
  const ClassifierOutput batch = model->score_rows(rows);
  for (size_t r = 0; r < rows.size(); ++r) {
    const at::Tensor ids = at::tensor(rows[r], at::kLong).unsqueeze(0);
    const at::Tensor want = (*decoder)->forward(ids)[0][static_cast<int64_t>(rows[r].size()) - 1].narrow(0, 0, 2);
    EXPECT_LE((model->forward(ids).scores[0] - want).abs().max().item<double>(), 1e-4) << r;
    EXPECT_LE((batch.scores[static_cast<int64_t>(r)] - want).abs().max().item<double>(), 1e-4) << r;
    EXPECT_EQ(batch.pooled_index[static_cast<int64_t>(r)].item<int64_t>(), static_cast<int64_t>(rows[r].size()) - 1);
  }
  fs::remove_all(dir);
}

// A batch reward that throws fails every sample of the call under on_error: score.
class ThrowingBatchReward : public Reward {
 public:
  bool scores_batches() const override { return true; }
  RewardScore score(const RewardSample&) const override { throw std::runtime_error("boom"); }
};

TEST(RewardSetBatch, ThrowingBatchRewardScoresErrorScore) {
  register_reward("test_throwing_batch", [](const json&) -> StatusOr<std::unique_ptr<Reward>> {
    return std::unique_ptr<Reward>(new ThrowingBatchReward());
  });
  StatusOr<RewardSet> set = RewardSet::create({{"test_throwing_batch", "", 1.0, json::object()}});
  ASSERT_TRUE(set.is_ok());
  ThreadPool pool(1);
  RewardConfig policy;
  policy.on_error = RewardErrorPolicy::kScore;
  policy.error_score = -3.0;
  ScoringStats stats;
  const auto results = set->score(samples(), policy, pool, &stats);
  EXPECT_EQ(stats.errors, static_cast<int64_t>(samples().size()));
  for (const auto& r : results) EXPECT_EQ(r.total, -3.0);
  policy.on_error = RewardErrorPolicy::kFail;
  EXPECT_THROW(set->score(samples(), policy, pool), std::runtime_error);
}

}  // namespace
}  // namespace grpo
