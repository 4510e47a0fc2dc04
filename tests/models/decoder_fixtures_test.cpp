// Every case directory in GRPO_MODEL_FIXTURES (default ../shared/fixtures/models): logits,
// hidden states, log-probs, the padded batch and the greedy continuation computed by Hugging Face
// transformers, reproduced from config.json + model.safetensors alone. Tolerances: the README.

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "models/decoder.h"
#include "tests/support/fixtures.h"
#include "tests/support/json_tensors.h"

namespace grpo {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string fixture_dir() { return testing::shared_path("GRPO_MODEL_FIXTURES", "fixtures/models"); }

std::vector<std::string> case_dirs() {
  return testing::sorted_entries(fixture_dir(), [](const fs::directory_entry& e) {
    return e.is_directory() && fs::exists(e.path() / "expected.json");
  });
}

using testing::max_abs_diff;

// log_softmax(logits[t])[ids[t+1]] for t < T-1: [T-1]
at::Tensor next_token_logprobs(const at::Tensor& logits, const at::Tensor& ids) {
  const int64_t t = ids.size(0);
  if (t < 2) return at::zeros({0}, at::kDouble);
  return at::log_softmax(logits.narrow(0, 0, t - 1), -1).gather(1, ids.narrow(0, 1, t - 1).unsqueeze(1)).squeeze(1);
}

class DecoderFixture : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    std::ifstream in(GetParam() + "/expected.json");
    expected_ = json::parse(in);
    StatusOr<Decoder> decoder = load_decoder(GetParam(), "float32");
    ASSERT_TRUE(decoder.is_ok()) << decoder.status().message();
    decoder_ = *decoder;
  }
  json expected_;
  Decoder decoder_{nullptr};
};

TEST(DecoderFixtures, DirectoryHoldsCases) { EXPECT_FALSE(case_dirs().empty()) << fixture_dir(); }

TEST_P(DecoderFixture, TensorNamesAndRope) {
  StatusOr<TensorMap> tensors = read_safetensors_dir(GetParam());
  ASSERT_TRUE(tensors.is_ok());
  std::vector<std::string> names;
  for (const auto& [name, t] : *tensors) names.push_back(name);
  EXPECT_EQ(names, expected_["safetensors_tensor_names"].get<std::vector<std::string>>());
  EXPECT_LE(max_abs_diff(decoder_->rope_inv_freq(), testing::json_to_tensor(expected_["rope_inv_freq"])), 1e-7);
}

TEST_P(DecoderFixture, SequencesMatchLogitsLogprobsAndHiddenStates) {
  at::NoGradGuard no_grad;
  for (const auto& seq : expected_["sequences"]) {
    const at::Tensor ids = testing::json_to_ids(seq["input_ids"]);
    const at::Tensor logits = decoder_->forward(ids.unsqueeze(0))[0];
    SCOPED_TRACE("length " + std::to_string(ids.size(0)));
    EXPECT_LE(max_abs_diff(logits[-1], testing::json_to_tensor(seq["last_logits"])), 1e-4);
    const at::Tensor logprobs = next_token_logprobs(logits, ids);
    if (!seq["token_logprobs"].empty()) {
      EXPECT_LE(max_abs_diff(logprobs, testing::json_to_tensor(seq["token_logprobs"])), 1e-4);
    }
    EXPECT_NEAR(logprobs.to(at::kDouble).sum().item<double>(), seq["sum_logprob"].get<double>(), 1e-3);
    if (seq.contains("all_logits")) {
      EXPECT_LE(max_abs_diff(logits, testing::json_to_tensor(seq["all_logits"])), 1e-4);
    }
    if (seq.contains("hidden_states")) {
      const auto states = decoder_->hidden_states(ids.unsqueeze(0));
      const at::Tensor want = testing::json_to_tensor(seq["hidden_states"]);
      ASSERT_EQ(static_cast<int64_t>(states.size()), want.size(0));
      for (size_t i = 0; i < states.size(); ++i) EXPECT_LE(max_abs_diff(states[i][0], want[i]), 1e-4) << "state " << i;
    }
  }
}

TEST_P(DecoderFixture, RightPaddedBatchMatches) {
  at::NoGradGuard no_grad;
  const json& batch = expected_["padded_batch"];
  const at::Tensor ids = testing::json_to_ids(batch["input_ids"]);
  const at::Tensor mask = testing::json_to_ids(batch["attention_mask"]);
  const at::Tensor logits = decoder_->forward(ids, mask);
  const at::Tensor lengths = mask.sum(1);
  for (int64_t row = 0; row < ids.size(0); ++row) {
    const int64_t len = lengths[row].item<int64_t>();
    EXPECT_LE(max_abs_diff(logits[row][len - 1], testing::json_to_tensor(batch["last_valid_logits"][row])), 1e-4) << "row " << row;
    const at::Tensor lp = next_token_logprobs(logits[row].narrow(0, 0, len), ids[row].narrow(0, 0, len));
    if (len > 1) {
      EXPECT_LE(max_abs_diff(lp, testing::json_to_tensor(batch["token_logprobs"][row])), 1e-4) << "row " << row;
    }
  }
}

TEST_P(DecoderFixture, LeftPaddedBatchEqualsUnpadded) {
  at::NoGradGuard no_grad;
  const json& seqs = expected_["sequences"];
  const int64_t width = 33;
  std::vector<at::Tensor> rows, masks;
  for (const auto& seq : seqs) {
    const at::Tensor ids = testing::json_to_ids(seq["input_ids"]);
    const int64_t pad = width - ids.size(0);
    rows.push_back(at::cat({at::zeros({pad}, at::kLong), ids}));
    masks.push_back(at::cat({at::zeros({pad}, at::kLong), at::ones({ids.size(0)}, at::kLong)}));
  }
  const at::Tensor logits = decoder_->forward(at::stack(rows), at::stack(masks));
  for (size_t i = 0; i < seqs.size(); ++i)
    EXPECT_LE(max_abs_diff(logits[i][-1], testing::json_to_tensor(seqs[i]["last_logits"])), 1e-4) << "row " << i;
}

TEST_P(DecoderFixture, GreedyWithKvCacheMatchesAndEqualsRecompute) {
  at::NoGradGuard no_grad;
  const json& greedy = expected_["greedy"];
  const at::Tensor prompt = testing::json_to_ids(greedy["prompt_ids"]).unsqueeze(0);
  const int64_t steps = greedy["max_new_tokens"];
  KvCache cache = decoder_->make_cache(1, prompt.size(1) + steps);
  at::Tensor logits = decoder_->forward(prompt, {}, &cache);
  std::vector<int64_t> produced;
  at::Tensor all_ids = prompt;
  for (int64_t i = 0; i < steps; ++i) {
    const at::Tensor next = logits[0][-1].argmax();
    produced.push_back(next.item<int64_t>());
    // KV-cache decode equals a full recompute over everything so far.
    const at::Tensor full = decoder_->forward(all_ids)[0][-1];
    EXPECT_LE(max_abs_diff(logits[0][-1], full), 1e-4) << "step " << i;
    all_ids = at::cat({all_ids, next.view({1, 1})}, 1);
    logits = decoder_->forward(next.view({1, 1}), {}, &cache);
  }
  EXPECT_EQ(produced, greedy["new_token_ids"].get<std::vector<int64_t>>());
}

TEST_P(DecoderFixture, Bfloat16ComputeIsClose) {
  if (!expected_.contains("bf16_compute")) GTEST_SKIP() << "no bf16_compute reference in this case";
  at::NoGradGuard no_grad;
  StatusOr<Decoder> bf16 = load_decoder(GetParam(), "bfloat16");
  ASSERT_TRUE(bf16.is_ok()) << bf16.status().message();
  const auto& seqs = expected_["sequences"];
  for (size_t i = 0; i < seqs.size(); ++i) {
    const at::Tensor logits = (*bf16)->forward(testing::json_to_ids(seqs[i]["input_ids"]).unsqueeze(0))[0][-1];
    EXPECT_LE(max_abs_diff(logits, testing::json_to_tensor(expected_["bf16_compute"]["last_logits"][i])), 0.1);
  }
}

TEST_P(DecoderFixture, SavedDirectoryLoadsBackBitIdentical) {
  const fs::path out = fs::temp_directory_path() / ("grpo_save_" + std::to_string(::getpid()) + "_" +
                                                    fs::path(GetParam()).filename().string());
  fs::remove_all(out);
  StatusOr<Decoder> original = load_decoder(GetParam(), "");  // keep the stored dtype
  ASSERT_TRUE(original.is_ok());
  ASSERT_TRUE(save_decoder(*original, out.string()).is_ok());
  StatusOr<TensorMap> a = read_safetensors_dir(GetParam());
  StatusOr<TensorMap> b = read_safetensors_dir(out.string());
  ASSERT_TRUE(a.is_ok() && b.is_ok());
  ASSERT_EQ(a->size(), b->size());
  for (const auto& [name, tensor] : *a) {
    ASSERT_TRUE(b->count(name)) << name;
    EXPECT_EQ(tensor.scalar_type(), b->at(name).scalar_type()) << name;
    EXPECT_TRUE(at::equal(tensor, b->at(name))) << name;
  }
  StatusOr<DecoderOptions> config = load_decoder_config(out.string());
  ASSERT_TRUE(config.is_ok()) << config.status().message();
  EXPECT_EQ(config->num_kv_heads, (*original)->options().num_kv_heads);
  EXPECT_EQ(config->rope_scaling.has_value(), (*original)->options().rope_scaling.has_value());
  fs::remove_all(out);
}

INSTANTIATE_TEST_SUITE_P(HuggingFace, DecoderFixture, ::testing::ValuesIn(case_dirs()), testing::fixture_case_name);
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(DecoderFixture);

}  // namespace
}  // namespace grpo
